"""A labelled PII evaluation set, and per-type precision/recall scoring.

Carriers are generated first-person posts and real blog posts from ``../shared/data/blogger``.
Into them go PII values of every supported type at known offsets, plus hard negatives (prices,
dates, versions, order numbers, capitalised titles). The injected values come from lists and
generators written here, not from anything the scrubber uses: names are deliberately varied
(West African, Māori, Irish, Turkish, Slavic, Nordic, South Asian, Chinese, Quechua, rare
English), built by hand rather than taken from Faker, which the scrubber uses for surrogates.
The scrubber finds names by NER and context, with no list of names: its one word list
(``pii_common_words.txt``) holds common English words in lower case, and a test checks that no
name of this set appears in its code.
The real posts keep the names their writers used (lower-case ones included): those are labelled
by hand below and count like injected ones.
"""

from __future__ import annotations

import json
import random
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

TYPES = ("PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER", "STREET_ADDRESS", "US_SSN", "CREDIT_CARD", "IBAN_CODE",
         "IP_ADDRESS", "URL")

FIRST = ["Oluwaseun", "Siobhán", "Xochitl", "Thandiwe", "Ngozi", "Björn", "Zeynep", "Anahera", "Dagny", "Priyanka",
         "Tomasz", "Aarav", "Mei-Ling", "Kwame", "Ifeoma", "Eilidh", "Radomír", "Saoirse", "Tupac", "Yusra",
         "Keanu", "Ljubica", "Aroha", "Chidubem", "Ingunn", "Thuy", "Dmitri", "Fenella", "Bartholomew", "Wren",
         "Ottoline", "Peregrine", "Lucinda", "Declan", "Marisol", "Hemi", "Olamide", "Sunniva", "Czesław", "Yaretzi"]
LAST = ["Adeyemi", "Ní Bhriain", "Quispe", "Mokoena", "Okonkwo", "Sigurðsson", "Yıldız", "Te Rangi", "Lindqvist",
        "Raghunathan", "Wiśniewski", "Mehta", "Tsao", "Asante", "Eze", "MacAulay", "Dvořák", "Ó Súilleabháin",
        "Mamani", "Haddad", "Kahananui", "Petrović", "Ngata", "Nwosu", "Haugland", "Nguyen", "Vasiliev",
        "Pennington-Smythe", "Thistlewood", "Abernethy", "Featherstonehaugh", "Quarles", "Ibarra", "Whaanga",
        "Balogun", "Kristiansen", "Brzęczyszczykiewicz", "Tlapaltotoli"]
STREETS = ["Kowhai", "Marigold", "Juniper", "Thistle", "Larkspur", "Wainwright", "Ashgrove", "Penhallow",
           "Ferncliffe", "Quillan"]
SUFFIXES = ["Street", "Road", "Avenue", "Lane", "Drive", "Court", "Terrace", "Way"]
CITIES = ["Springvale", "Ashford", "Riverton", "Millbrook", "Kingsbridge", "Port Ellen", "Westholm", "Dunmore"]
DOMAINS = ["mailbox.org", "posteo.de", "proton.me", "gmx.net", "outlook.com", "uni-heidelberg.de", "fastmail.com",
           "yandex.ru", "icloud.com"]
SITES = ["instagram.com/{h}", "twitter.com/{h}", "facebook.com/{f}.{l}.{n}", "linkedin.com/in/{f}-{l}-{x}",
         "github.com/{h}", "www.reddit.com/user/{h}", "https://example.org/profile?id={n}",
         "https://www.tiktok.com/@{h}"]

CARRIER_SENTENCES = [
    "I have been meaning to write this down for a while.", "Work has been exhausting this month.",
    "We finally painted the kitchen a pale green colour.", "The weather turned cold again on the weekend.",
    "My sister thinks I worry too much about small things.", "I started cooking proper dinners instead of takeaway.",
    "Honestly I did not expect the move to be this emotional.", "The dog refuses to walk in the rain.",
    "I keep a list of things that made me laugh each day.", "Our landlord finally fixed the heating.",
    "I signed up for an evening class in woodworking.", "The train was late three times this week.",
    "I am trying to read a book a month this year.", "My knee has been aching since the hike.",
    "We argued about money again and then made up.", "I spent the afternoon sorting old photographs.",
]
HARD_NEGATIVES = [
    "It cost $1,249.99 back in 2019.", "The meeting moved to 10:30 on 12/05/2021.", "I am 5 ft 10 and about 160 lbs.",
    "Version 2.3.14 finally fixed the crash.", "Order #4471-2291 arrived two weeks late.",
    "We read The Great Gatsby in March.", "Christmas in New York was lovely this year.",
    "My score was 1450 out of 1600.", "We drove Route 66 and then Highway 101.", "He ran 10,000 meters in 31:45.",
    "I binge-watched Breaking Bad over Easter.", "The recipe needs 250 g flour and 2 eggs.",
    "Room 404 on floor 3 was freezing.", "Flight BA 2490 boarded at gate 17.", "Apple and Google both rejected my app.",
    "The thermostat says 21.5 degrees.", "Chapter 12, page 384, paragraph 2.",
]


def _ascii(s: str) -> str:
    return unicodedata.normalize("NFKD", s).encode("ascii", "ignore").decode().replace(" ", "").replace("'", "")


def _luhn(prefix: str, length: int, rng: random.Random) -> str:
    digits = prefix + "".join(rng.choice("0123456789") for _ in range(length - len(prefix) - 1))
    total = 0
    for i, d in enumerate(reversed(digits)):
        n = int(d)
        if i % 2 == 0:
            n *= 2
            n -= 9 if n > 9 else 0
        total += n
    return digits + str((10 - total % 10) % 10)


def _iban(country: str, bban_len: int, rng: random.Random) -> str:
    bban = "".join(rng.choice("0123456789") for _ in range(bban_len))
    if country == "NL":  # NL BBANs start with a four-letter bank code
        bban = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(4)) + bban[4:]
    num = int("".join(str(int(c, 36)) for c in bban + country + "00"))
    raw = f"{country}{98 - num % 97:02d}{bban}"
    return " ".join(raw[i:i + 4] for i in range(0, len(raw), 4)) if rng.random() < 0.6 else raw


def _value(etype: str, rng: random.Random) -> str:
    f, l = rng.choice(FIRST), rng.choice(LAST)
    if etype == "PERSON":
        return f if rng.random() < 0.35 else f"{f} {l}"
    if etype == "EMAIL_ADDRESS":
        return f"{_ascii(f).lower()}{rng.choice(['.', '_', ''])}{_ascii(l).lower()}{rng.randrange(100)}@{rng.choice(DOMAINS)}"
    if etype == "PHONE_NUMBER":
        a, b, c = rng.randrange(201, 989), rng.randrange(200, 999), rng.randrange(1000, 9999)
        return rng.choice([f"({a}) {b}-{c}", f"{a}-{b}-{c}", f"+1 {a} {b} {c}", f"+44 20 7{rng.randrange(100, 999)} {c}",
                           f"07{rng.randrange(100, 999)} {rng.randrange(100000, 999999)}", f"+49 30 {b}{c}"])
    if etype == "US_SSN":
        area = rng.choice([x for x in range(1, 900) if x != 666])
        return f"{area:03d}-{rng.randrange(1, 100):02d}-{rng.randrange(1, 10000):04d}"
    if etype == "CREDIT_CARD":
        num = _luhn(rng.choice(["4", "51", "55"]), 16, rng)
        sep = rng.choice([" ", "-", ""])
        return sep.join(num[i:i + 4] for i in range(0, 16, 4))
    if etype == "IBAN_CODE":
        return rng.choice([lambda: _iban("DE", 18, rng), lambda: _iban("NL", 14, rng), lambda: _iban("FR", 23, rng)])()
    if etype == "IP_ADDRESS":
        if rng.random() < 0.2:
            return ":".join(f"{rng.randrange(0, 65536):x}" for _ in range(8))
        return ".".join(str(x) for x in (rng.randrange(11, 223), rng.randrange(256), rng.randrange(256), rng.randrange(1, 255)))
    if etype == "STREET_ADDRESS":
        return f"{rng.randrange(2, 999)} {rng.choice(STREETS)} {rng.choice(SUFFIXES)}, {rng.choice(CITIES)}"
    if etype == "URL":
        h = f"{_ascii(f).lower()}_{_ascii(l).lower()[:5]}{rng.randrange(10, 99)}"
        return rng.choice(SITES).format(h=h, f=_ascii(f).lower(), l=_ascii(l).lower(), n=rng.randrange(10**6, 10**9),
                                        x=f"{rng.randrange(16**6):06x}")
    raise ValueError(etype)


TEMPLATES = {
    "PERSON": ["I had coffee with {v} yesterday.", "My neighbour {v} helped me carry the boxes.",
               "Then {v} called me back and apologised.", "I told {v} about the interview.",
               "At the party {v} would not stop talking about her new job."],
    "EMAIL_ADDRESS": ["You can email me at {v} if you want the recipe.", "My address is {v}, write any time."],
    "PHONE_NUMBER": ["Text me on {v} after six.", "The clinic called from {v} twice."],
    "STREET_ADDRESS": ["We just moved to {v} and I love it.", "Send the parcel to {v}, please."],
    "US_SSN": ["The form asked for my SSN, so I wrote {v}.", "My social security number {v} was printed on the letter."],
    "CREDIT_CARD": ["I paid with my card {v} and it was charged twice.", "The card ending in that long number {v} got blocked."],
    "IBAN_CODE": ["Please transfer it to my account {v}.", "My IBAN is {v} if you want to pay me back."],
    "IP_ADDRESS": ["My home server sits at {v} now.", "The log showed my IP {v} all night."],
    "URL": ["Follow me at {v} for the photos.", "My profile is {v} if you want to see it."],
}

# Names the writers of the real carrier posts used (first 800 characters), labelled by hand.
REAL_NAMES: dict[str, list[str]] = {
    "328871": ["George", "Isaac"],
    "373243": ["colleen", "beth", "amanda", "monica", "kadie", "leah", "laurice", "sam", "jackie", "devonne"],
    "438424": ["Regina"],
    "535301": ["Emma", "Joe"],
    "34066": ["Smare"],
    "81566": ["Davee", "Louie"],
    "99780": ["Jeff", "Kevin"],
    "363767": ["Terry"],
    "358681": ["Michelle", "Emma"],
    "120302": ["Benjamin Blech"],
    "334194": ["Craig Seligman", "Seligman", "Kael", "Sontag"],
    "494484": ["George", "Bush", "John Kerry", "Kerry"],
    # no names at all
    "261190": [], "578284": [], "161736": [], "664116": [], "364722": [], "159056": [], "536726": [], "476932": [],
}


@dataclass
class Doc:
    doc_id: str
    text: str
    gold: list[tuple[int, int, str]] = field(default_factory=list)  # (start, end, type)
    origin: str = "generated"


def _label_names(text: str, names: list[str]) -> list[tuple[int, int, str]]:
    spans: list[tuple[int, int, str]] = []
    for name in sorted(names, key=len, reverse=True):
        for m in re.finditer(rf"(?<![\w]){re.escape(name)}(?![\w])", text):
            if not any(m.start() < e and s < m.end() for s, e, _ in spans):
                spans.append((m.start(), m.end(), "PERSON"))
    return spans


def _inject(base: str, rng: random.Random, n_pii: int, n_neg: int, gold: list) -> tuple[str, list]:
    """Insert PII and hard-negative sentences between sentences of ``base``; shift gold spans."""
    parts = re.split(r"(?<=[.!?])\s+", base.strip())
    inserts: list[tuple[int, str, tuple[int, int, str] | None]] = []
    for _ in range(n_pii):
        etype = rng.choice(TYPES)
        value = _value(etype, rng)
        tpl = rng.choice(TEMPLATES[etype])
        sent = tpl.format(v=value)
        inserts.append((rng.randrange(len(parts) + 1), sent, (tpl.index("{v}"), tpl.index("{v}") + len(value), etype)))
    for _ in range(n_neg):
        inserts.append((rng.randrange(len(parts) + 1), rng.choice(HARD_NEGATIVES), None))
    # rebuild text, tracking offsets of original parts and inserted sentences
    slots: dict[int, list] = {}
    for pos, sent, span in inserts:
        slots.setdefault(pos, []).append((sent, span))
    out, new_gold = "", []
    # map old gold spans (on base) by locating each part's offset
    base_offsets, cursor = [], 0
    stripped = base.strip()
    lead = len(base) - len(base.lstrip())
    for p in parts:
        i = stripped.index(p, cursor)
        base_offsets.append(i + lead)
        cursor = i + len(p)
    for k in range(len(parts) + 1):
        for sent, span in slots.get(k, []):
            start = len(out) + (1 if out else 0)
            out += (" " if out else "") + sent
            if span:
                new_gold.append((start + span[0], start + span[1], span[2]))
        if k < len(parts):
            start = len(out) + (1 if out else 0)
            out += (" " if out else "") + parts[k]
            for s, e, t in gold:
                if base_offsets[k] <= s < base_offsets[k] + len(parts[k]):
                    new_gold.append((start + s - base_offsets[k], start + e - base_offsets[k], t))
    return out, sorted(new_gold)


def build(shared_data: Path | None, n_generated: int = 90, seed: int = 7) -> list[Doc]:
    rng = random.Random(seed)
    docs: list[Doc] = []
    for i in range(n_generated):
        base = " ".join(rng.sample(CARRIER_SENTENCES, rng.randrange(7, 10)))
        text, gold = _inject(base, rng, rng.randrange(1, 4), rng.randrange(1, 3), [])
        docs.append(Doc(f"gen{i:03d}", text, gold))
    if shared_data is not None and (shared_data / "blogger" / "blogger_sample.jsonl").is_file():
        rows = {str(r["id"]): r["text"] for r in map(json.loads, open(shared_data / "blogger" / "blogger_sample.jsonl"))}
        for rid, names in REAL_NAMES.items():
            base = rows[rid][:800]
            gold = _label_names(base, names)
            text, gold = _inject(base, rng, rng.randrange(0, 3), rng.randrange(0, 2), gold)
            docs.append(Doc(f"blog{rid}", text, gold, origin="real"))
    for d in docs:  # the labels must point at what they claim
        for s, e, t in d.gold:
            assert d.text[s:e].strip() == d.text[s:e] and e > s, (d.doc_id, d.text[s:e])
    return docs


def score(docs: list[Doc], predicted: list[list[tuple[int, int, str]]], aliases: dict[str, str] | None = None) -> dict:
    """Per-type precision and recall (a prediction counts if it overlaps a gold span of its type).
    ``aliases`` maps a system's type names onto ours (a baseline's LOCATION onto STREET_ADDRESS)."""
    aliases = aliases or {}
    stats = {t: {"gold": 0, "found": 0, "pred": 0, "tp_pred": 0} for t in TYPES}
    for d, preds in zip(docs, predicted):
        preds = [(s, e, aliases.get(t, t)) for s, e, t in preds]
        preds = [p for p in preds if p[2] in stats]
        for s, e, t in d.gold:
            stats[t]["gold"] += 1
            if any(ps < e and s < pe and pt == t for ps, pe, pt in preds):
                stats[t]["found"] += 1
        for ps, pe, pt in preds:
            stats[pt]["pred"] += 1
            if any(ps < e and s < pe and t == pt for s, e, t in d.gold):
                stats[pt]["tp_pred"] += 1
    out = {}
    for t, v in stats.items():
        out[t] = {
            "gold": v["gold"],
            "recall": v["found"] / v["gold"] if v["gold"] else None,
            "precision": v["tp_pred"] / v["pred"] if v["pred"] else None,
        }
    return out
