"""Leagues and teams of the demo, with the strengths the goals model runs on.

Team names are real clubs (as the design document's examples use: 曼联, 切尔西); the
strengths are rough and invented for the demo, not a rating of anyone. ``attack`` and
``defence`` multiply the league's average scoring rate: above 1 attacks better, below
1 concedes less.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class League:
    name: str  #: Chinese name, the value events carry in ``league`` (as in the design document)
    name_en: str
    goals_per_team: float  #: average goals one team scores in a match of this league


@dataclass(frozen=True, slots=True)
class Team:
    name: str  #: Chinese name, the value events carry in ``home_team``/``away_team``
    name_en: str
    league: str
    attack: float
    defence: float
    venue: str
    venue_en: str


@dataclass(frozen=True, slots=True)
class Player:
    name: str
    name_en: str


LEAGUES: tuple[League, ...] = (
    League("英超", "Premier League", 1.32),
    League("西甲", "La Liga", 1.22),
    League("意甲", "Serie A", 1.24),
    League("德甲", "Bundesliga", 1.42),
    League("法甲", "Ligue 1", 1.25),
    League("中超", "Chinese Super League", 1.34),
)

LEAGUE_BY_NAME: dict[str, League] = {lg.name: lg for lg in LEAGUES}

# (zh, en, attack, defence, venue zh, venue en)
_TEAMS: dict[str, tuple[tuple[str, str, float, float, str, str], ...]] = {
    "英超": (
        ("曼城", "Manchester City", 1.45, 0.70, "伊蒂哈德球场", "Etihad Stadium"),
        ("阿森纳", "Arsenal", 1.35, 0.72, "酋长球场", "Emirates Stadium"),
        ("利物浦", "Liverpool", 1.40, 0.78, "安菲尔德", "Anfield"),
        ("切尔西", "Chelsea", 1.15, 0.90, "斯坦福桥", "Stamford Bridge"),
        ("曼联", "Manchester United", 1.05, 0.98, "老特拉福德球场", "Old Trafford"),
        ("热刺", "Tottenham Hotspur", 1.15, 1.05, "托特纳姆热刺球场", "Tottenham Hotspur Stadium"),
        ("纽卡斯尔联", "Newcastle United", 1.10, 0.92, "圣詹姆斯公园", "St James' Park"),
        ("阿斯顿维拉", "Aston Villa", 1.08, 0.98, "维拉公园", "Villa Park"),
    ),
    "西甲": (
        ("皇家马德里", "Real Madrid", 1.45, 0.70, "伯纳乌球场", "Santiago Bernabéu"),
        ("巴塞罗那", "FC Barcelona", 1.45, 0.80, "诺坎普", "Camp Nou"),
        ("马德里竞技", "Atlético Madrid", 1.15, 0.72, "大都会球场", "Metropolitano"),
        ("皇家社会", "Real Sociedad", 0.95, 0.92, "阿诺埃塔球场", "Anoeta"),
        ("比利亚雷亚尔", "Villarreal", 1.05, 1.02, "陶瓷球场", "Estadio de la Cerámica"),
        ("塞维利亚", "Sevilla", 0.95, 1.00, "皮斯胡安球场", "Ramón Sánchez-Pizjuán"),
        ("皇家贝蒂斯", "Real Betis", 1.00, 1.00, "贝尼托·比利亚马林球场", "Benito Villamarín"),
        ("毕尔巴鄂竞技", "Athletic Club", 1.02, 0.88, "圣马梅斯球场", "San Mamés"),
    ),
    "意甲": (
        ("国际米兰", "Inter", 1.40, 0.70, "梅阿查球场", "San Siro"),
        ("AC米兰", "AC Milan", 1.20, 0.88, "圣西罗球场", "San Siro"),
        ("尤文图斯", "Juventus", 1.10, 0.75, "安联球场", "Allianz Stadium"),
        ("那不勒斯", "Napoli", 1.20, 0.85, "马拉多纳球场", "Stadio Diego Armando Maradona"),
        ("罗马", "AS Roma", 1.05, 0.88, "奥林匹克球场", "Stadio Olimpico"),
        ("拉齐奥", "Lazio", 1.05, 0.95, "奥林匹克球场", "Stadio Olimpico"),
        ("亚特兰大", "Atalanta", 1.25, 0.92, "蓝色球场", "Gewiss Stadium"),
        ("佛罗伦萨", "Fiorentina", 1.00, 0.98, "弗兰基球场", "Stadio Artemio Franchi"),
    ),
    "德甲": (
        ("拜仁慕尼黑", "Bayern Munich", 1.55, 0.72, "安联球场", "Allianz Arena"),
        ("勒沃库森", "Bayer Leverkusen", 1.35, 0.78, "拜耳竞技场", "BayArena"),
        ("多特蒙德", "Borussia Dortmund", 1.30, 0.92, "威斯特法伦球场", "Signal Iduna Park"),
        ("RB莱比锡", "RB Leipzig", 1.20, 0.88, "红牛竞技场", "Red Bull Arena"),
        ("斯图加特", "VfB Stuttgart", 1.15, 0.98, "MHP竞技场", "MHPArena"),
        ("法兰克福", "Eintracht Frankfurt", 1.08, 1.00, "德意志银行公园", "Deutsche Bank Park"),
        ("沃尔夫斯堡", "VfL Wolfsburg", 0.95, 1.05, "大众汽车竞技场", "Volkswagen Arena"),
        ("门兴格拉德巴赫", "Borussia Mönchengladbach", 1.00, 1.08, "普鲁士公园", "Borussia-Park"),
    ),
    "法甲": (
        ("巴黎圣日耳曼", "Paris Saint-Germain", 1.55, 0.72, "王子公园球场", "Parc des Princes"),
        ("摩纳哥", "AS Monaco", 1.20, 0.95, "路易二世球场", "Stade Louis II"),
        ("马赛", "Olympique de Marseille", 1.15, 0.92, "韦洛德罗姆球场", "Orange Vélodrome"),
        ("里尔", "LOSC Lille", 1.05, 0.85, "皮埃尔·莫鲁瓦球场", "Stade Pierre-Mauroy"),
        ("里昂", "Olympique Lyonnais", 1.10, 1.00, "里昂体育场", "Groupama Stadium"),
        ("尼斯", "OGC Nice", 0.95, 0.88, "安联里维埃拉球场", "Allianz Riviera"),
        ("朗斯", "RC Lens", 1.00, 0.90, "博勒尔-德莱利斯球场", "Stade Bollaert-Delelis"),
        ("雷恩", "Stade Rennais", 1.02, 0.98, "罗阿松公园球场", "Roazhon Park"),
    ),
    "中超": (
        ("上海海港", "Shanghai Port", 1.35, 0.82, "浦东足球场", "Pudong Football Stadium"),
        ("上海申花", "Shanghai Shenhua", 1.25, 0.85, "虹口足球场", "Hongkou Stadium"),
        ("成都蓉城", "Chengdu Rongcheng", 1.20, 0.90, "凤凰山体育公园", "Phoenix Hill Stadium"),
        ("北京国安", "Beijing Guoan", 1.15, 0.95, "工人体育场", "Workers' Stadium"),
        ("山东泰山", "Shandong Taishan", 1.10, 0.92, "济南奥体中心", "Jinan Olympic Sports Center"),
        ("浙江队", "Zhejiang FC", 1.05, 1.02, "黄龙体育中心", "Huanglong Sports Center"),
        (
            "天津津门虎",
            "Tianjin Jinmen Tiger",
            0.95,
            1.00,
            "天津奥林匹克中心",
            "Tianjin Olympic Center",
        ),
        ("河南队", "Henan FC", 0.95, 1.05, "航海体育场", "Hanghai Stadium"),
    ),
}

TEAMS: tuple[Team, ...] = tuple(
    Team(zh, en, league, att, dfn, venue, venue_en)
    for league, rows in _TEAMS.items()
    for (zh, en, att, dfn, venue, venue_en) in rows
)

# Surnames as live commentary names scorers; shared pool, drawn per team.
_PLAYERS: tuple[tuple[str, str], ...] = (
    ("马丁内斯", "Martínez"),
    ("席尔瓦", "Silva"),
    ("费尔南德斯", "Fernandes"),
    ("穆勒", "Müller"),
    ("罗德里格斯", "Rodríguez"),
    ("加西亚", "García"),
    ("桑切斯", "Sánchez"),
    ("德布劳内", "De Bruyne"),
    ("凯恩", "Kane"),
    ("萨拉赫", "Salah"),
    ("维尔茨", "Wirtz"),
    ("贝林厄姆", "Bellingham"),
    ("劳塔罗", "Lautaro"),
    ("奥斯梅恩", "Osimhen"),
    ("登贝莱", "Dembélé"),
    ("格列兹曼", "Griezmann"),
    ("莫拉塔", "Morata"),
    ("佩德里", "Pedri"),
    ("贝纳塞尔", "Bennacer"),
    ("格拉利什", "Grealish"),
    ("福登", "Foden"),
    ("萨卡", "Saka"),
    ("帕尔默", "Palmer"),
    ("伊萨克", "Isak"),
    ("武磊", "Wu Lei"),
    ("张玉宁", "Zhang Yuning"),
    ("韦世豪", "Wei Shihao"),
    ("奥斯卡", "Oscar"),
    ("费利佩", "Felipe"),
    ("谢鹏飞", "Xie Pengfei"),
    ("吴曦", "Wu Xi"),
    ("王上源", "Wang Shangyuan"),
)


def squad(team: Team) -> tuple[Player, ...]:
    """A team's four likeliest scorers, the same every run (seeded by the team's name)."""
    rng = random.Random(team.name_en)
    return tuple(Player(zh, en) for zh, en in rng.sample(_PLAYERS, 4))


def teams_of(league: str) -> tuple[Team, ...]:
    return tuple(t for t in TEAMS if t.league == league)
