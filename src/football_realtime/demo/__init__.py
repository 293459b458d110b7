"""The demo: a small football world (fixtures, a Poisson goals model) and the simulated
data, prediction, odds and notification services that publish into the realtime service.

Read in this order: ``fixtures`` (leagues, teams), ``model`` (probabilities, odds),
``services`` (what each business service publishes), ``simulation`` (the world, one
minute per step), ``runner`` (clock and publishing), ``app`` and ``cli`` (wiring).
"""
