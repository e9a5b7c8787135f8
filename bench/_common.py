"""Shared helpers for the benchmarks: synthetic Pushshift-style Reddit dumps, child runs with peak memory."""

from __future__ import annotations

import importlib
import json
import os
import random
import re
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

# --- synthetic Pushshift dumps -------------------------------------------------------------------
# Reddit-looking text from sentence templates over a few thousand real English words (Faker's
# en_US lorem lists by part of speech, inflected, plus a Reddit lexicon), drawn Zipf-like so
# unrelated texts share few 5-grams; ~3 % of comments in German, French, Spanish, Italian,
# Dutch or Polish (Faker's lorem lists). Everything is drawn from one seed.

_FUNCTION = {
    "P": "I|I|I|I|I|you|we|they|he|she|it|my wife|my husband|my friend|my boss|my mom|my dad|my girlfriend|"
         "my boyfriend|my roommate|my brother|my sister|someone|everyone|nobody|my coworker|my neighbor",
    "O": "me you him her them us it everyone",
    "D": "the the the the the a a a my my this that your his her our their every some one no any another",
    "PR": "in on at for with about from to after before during without like into over under around near",
    "C": "and and and but but so because although while since or",
    "T": "yesterday|last week|last night|a few years ago|this morning|two days ago|back in 2015|every day|"
         "all the time|right now|last summer|for months|in high school|after work|over the weekend|"
         "a couple of weeks ago|when I was a kid|earlier today|this year|last month",
    "I": "Honestly,|Lol|Yeah,|Dude,|Wow,|Ngl,|Tbh|Imo,|Same,|Nah,|Okay so|Not gonna lie,|To be fair,|Ugh,|"
         "Well,|Oh man,|Seriously,|Funny enough,|Fwiw,|Edit aside,",
}
_LEXICON = (
    "upvote downvote subreddit karma mods thread repost sidebar flair crosspost meme gpu cpu ram ssd "
    "motherboard monitor keyboard steam console controller patch update server lag ping rent landlord "
    "paycheck budget mortgage loan credit debt savings gym reps protein workout cardio recipe garlic onion "
    "oven skillet sauce puppy vet kitten leash flight hotel airport passport season episode trailer sequel "
    "playoffs coach referee roster draft trade lawyer therapist doctor diagnosis insurance commute "
    "apartment neighbor roommate wedding divorce breakup girlfriend boyfriend coworker manager interview "
    "resume promotion salary deadline laptop router wifi password browser app notification screenshot "
    "youtube netflix spotify podcast playlist album concert ticket festival beer whiskey pizza burger taco "
    "coffee espresso sandwich bakery grocery fridge microwave dishwasher laundry couch mattress blanket"
).split()
_IRREGULAR = dict(p.split(":") for p in (
    "be:was have:had do:did say:said get:got make:made go:went see:saw know:knew take:took think:thought "
    "come:came give:gave find:found tell:told feel:felt become:became leave:left put:put mean:meant "
    "keep:kept let:let begin:began run:ran write:wrote bring:brought buy:bought sit:sat stand:stood "
    "lose:lost pay:paid meet:met read:read grow:grew win:won speak:spoke spend:spent build:built send:sent "
    "fall:fell cut:cut sell:sold hold:held hear:heard eat:ate drive:drove break:broke choose:chose "
    "teach:taught catch:caught draw:drew wear:wore fight:fought throw:threw forget:forgot sleep:slept "
    "understand:understood lead:led ride:rode sing:sang drink:drank fly:flew hit:hit set:set shut:shut "
    "hurt:hurt cost:cost wake:woke steal:stole hide:hid shoot:shot feed:fed dig:dug hang:hung"
).split())
_TEMPLATES = (
    "{P} {VD} {D} {A} {N} {PR} {D} {N}.", "{P} {R} {VD} {D} {N} when {P} {VD} {PR} {D} {NS}.",
    "{I} {D} {N} is {R} {A} and {P} {VD} it.", "Has anyone else {VD} {D} {N} {PR} {D} {N}?",
    "{T}, {P} {VD} {D} {N} and it was {A}.", "If you {VB} {D} {N}, you will {VB} {D} {NS}.",
    "My {N} {VD} {D} {NS} {PR} {NUM} {NS}, {C} {P} {R} {VD} {D} {N}.",
    "That {N} is {R} {A}, {C} the {NS} are {A}.", "I don't think {D} {N} {VZ} {PR} {D} {N}.",
    "Why would {P} {VB} {D} {A} {N}?", "We {VD} {PR} {D} {N} for {NUM} {NS} {T}.",
    "It's not {A}, it's just {A}.", "{I} I {R} {VB} {NS} {PR} {D} {N}.",
    "The {N} {VZ} {D} {N}, {C} nobody {VZ} about the {NS}.", "{P} kept {VG} {D} {N} {PR} {O}.",
    "You should {VB} {D} {N} {PR} {D} {A} {N}.", "{D} {NS} {PR} {D} {N} {VD} {R} {A}.",
    "I {VD} {NUM} {NS} {T} {C} {P} {VD} {D} {N}.", "Do you {VB} {D} {N} {C} {D} {N}?",
    "{P} {VD} {O} that {D} {N} was {A}.", "There is {R} {D} {A} {N} {PR} {D} {N}.",
    "{I} this is the {A} {N} {P} {VD} {T}.", "Stop {VG} {D} {NS} {PR} {D} {N}.",
    "After {VG} {D} {N}, {P} {R} {VD} {PR} {D} {N}.", "{P} can't {VB} {D} {N} without {VG} {D} {N}.",
    "What {VD} {P} {VB} {PR} {D} {N}?", "{A} {NS} are {R} {A} {PR} {D} {N}.",
    "I {R} {VB} {VG} {D} {NS} {T}.", "Every {N} {VZ} {D} {N}, {C} {P} {VB} {O}.",
    "{P} {VD} ${NUM} on {D} {A} {N}.", "{NUM}% of {D} {NS} {VB} {D} {N}.",
    "The {A} {N} {PR} {D} {N} {VD} {D} {N}.", "Thanks for {VG} {D} {N}, {P} {R} {VD} {O}.",
    "I'm {R} {A} {PR} {D} {N} {T}.", "{I} {D} {N} {VD} {NUM} {NS} {PR} {D} {N}.",
    "Is it {A} to {VB} {D} {N} {PR} {D} {N}?", "{P} {VZ} {D} {N} {C} {P} {VZ} {D} {A} {N}.",
    "Not every {N} {VZ} {D} {NS}.", "{T} {P} {VD} {R} {VG} {PR} {D} {N}.",
    "Can confirm, {D} {N} {VD} {D} {NS}.", "Just {VB} {D} {N} and {VB} {D} {N}.",
)
_SHORT = ("lol", "This.", "Thank you!", "Same.", "Username checks out.", "Happy cake day!", "Source?", "Agreed.",
          "r/AskReddit", "Nice.", "Came here to say this.", "I came here to say this.", "Exactly this.",
          "Underrated comment.", "This is the way.", "Take my upvote.", "F", "Big if true.", "Wholesome.",
          "Thanks, I hate it.", "Can confirm.", "Why is this so true?", "lmao", "Same here, honestly.")
_EDITS = ("Edit: thanks for the gold!", "Edit: thanks for the gold, kind stranger!", "Edit: typo", "EDIT: spelling",
          "Edit: Wow, this blew up. Thanks everyone!", "Edit: RIP my inbox", "Edit: a word",
          "**Edit:** thanks for all the replies, I read every one of them.")
_DOMAINS = ("www.youtube.com/watch?v=", "imgur.com/a/", "i.redd.it/", "en.wikipedia.org/wiki/", "www.reddit.com/r/",
            "twitter.com/status/", "www.amazon.com/dp/", "github.com/", "www.nytimes.com/2019/", "v.redd.it/")
_SUBS = ("AskReddit", "funny", "gaming", "worldnews", "todayilearned", "pics", "relationship_advice", "AmItheAsshole",
         "personalfinance", "Fitness", "Cooking", "buildapc", "programming", "movies", "nba", "soccer", "politics",
         "news", "explainlikeimfive", "aww", "technology", "LifeProTips", "offmychest", "unpopularopinion", "pcgaming",
         "dogs", "travel", "books", "science", "TrueOffMyChest", "legaladvice", "cars", "Parenting", "hiphopheads")
_FOREIGN = {  # language: (Faker lorem locale, subreddits, function words mixed in)
    "de": ("de_DE", ("de", "germany", "Austria"), "der die das und ist nicht ich du wir es ein eine zu mit auf für"),
    "fr": ("fr_FR", ("france", "Quebec"), "le la les et est pas je tu nous il un une de du avec pour que"),
    "es": ("es_ES", ("mexico", "argentina", "spain"), "de la que el en y a los se no un por con para"),
    "it": ("it_IT", ("italy",), "il la e è non che di un una per con mi ti si"),
    "nl": ("nl_NL", ("thenetherlands", "belgium"), "de het een en is niet ik je we dat van met voor"),
    "pl": ("pl_PL", ("Polska",), "w z na i do nie to się że jak ja"),
}
# (name, index into _BOT_BODIES): SaveVideo, B0tRank and auto-xkcd37 pass the bot name rule, as on Reddit
_BOTS = (("RemindMeBot", 0), ("sneakpeekbot", 1), ("SaveVideo", 2), ("AmputatorBot", 3), ("converter-bot", 4),
         ("WikiTextBot", 3), ("RepostSleuthBot", 1), ("timee_bot", 4), ("Grammar-Bot-Elite", 4), ("stabbot", 2),
         ("B0tRank", 4), ("auto-xkcd37", 3))
_BOT_FOOTER = ("\n\n*I am a bot, and this action was performed automatically. Please [contact the moderators of this "
               "subreddit](/message/compose/?to=/r/{sub}) if you have any questions or concerns.*")
_BOT_BODIES = (
    "I will be messaging you in {n} days on [2019-{m:02d}-{d:02d} 12:00:00 UTC](http://www.wolframalpha.com/input/"
    "?i=2019-{m:02d}-{d:02d}%2012:00:00%20UTC%20To%20Local%20Time) to remind you of [**this link**](https://www.reddit"
    ".com/r/{sub}/comments/{id}/)\n\n[**CLICK THIS LINK**](https://www.reddit.com/message/compose/?to=RemindMeBot) to "
    "send a PM to also be reminded and to reduce spam.\n\n^(Parent commenter can ) [^(delete this message to hide from "
    "others.)](https://www.reddit.com/message/compose/?to=RemindMeBot)\n\n|[^(Info)](https://www.reddit.com/r/RemindMeBot/)"
    "|[^(Custom)](https://www.reddit.com/message/compose/?to=RemindMeBot)|[^(Your Reminders)](https://www.reddit.com/"
    "message/compose/?to=RemindMeBot&amp;subject=List%20Of%20Reminders)|[^(Feedback)](https://www.reddit.com/message/"
    "compose/?to=Watchful1)|\n|-|-|-|-|",
    "Here's a sneak peek of /r/{sub} using the [top posts](https://np.reddit.com/r/{sub}/top/?sort=top&amp;t=year) of "
    "the year!\n\n\\#1: [{s1}](https://np.reddit.com/r/{sub}/comments/{id}/) | [{n} comments](https://np.reddit.com/r/"
    "{sub}/comments/{id}/)  \n\\#2: [{s2}](https://i.redd.it/{id}.jpg) | [{d} comments](https://np.reddit.com/r/{sub}/"
    "comments/{id}/)\n\n----\n^^I'm ^^a ^^bot, ^^beep ^^boop ^^| ^^Downvote ^^to ^^remove ^^| ^^[Contact](https://www."
    "reddit.com/message/compose/?to=sneakpeekbot) ^^| ^^[Info](https://np.reddit.com/r/sneakpeekbot/)",
    "###[View link](https://rapidsave.com/info?url=/r/{sub}/comments/{id}/)\n\n---\n **Info** | [**Feedback**]"
    "(https://np.reddit.com/message/compose/?to=Kryptonh&amp;subject=Feedback+for+savevideo) | [**Donate**](https://"
    "ko-fi.com/getvideo) | [**DMCA**](https://np.reddit.com/message/compose/?to=Kryptonh&amp;subject=Content removal "
    "request for savevideo&amp;message=https://np.reddit.com//r/{sub}/comments/{id}/) |",
    "It looks like OP posted an AMP link. These should load faster, but AMP is controversial because of [concerns "
    "over privacy and the Open Web](https://www.reddit.com/r/AmputatorBot/comments/ehrq3z/why_did_i_build_amputatorbot)."
    "\n\nMaybe check out **the canonical page** instead: **[{s1}](https://www.example.com/{id})**\n\n*****\n\n ^(I'm a "
    "bot | )[^(Why & About)](https://www.reddit.com/r/AmputatorBot/)^( | )[^(Summon: u/AmputatorBot)](https://www.reddit"
    ".com/r/AmputatorBot/comments/cchly3/)",
    "{n} feet is {d} meters ^(I'm a bot. Downvote to remove.)",
)
_AUTOMOD = (
    "Hi u/{user}, thanks for posting to r/{sub}! Please remember to read the rules in the sidebar and keep the "
    "discussion civil. Posts that break the rules will be removed.",
    "Your submission has been automatically removed because your account is too new. Accounts must be at least "
    "{n} days old to post in r/{sub}.",
    "**OP's post, in case it is edited or deleted:**\n\n&gt; {s1} {s2}",
    "Please reply to this comment with a short explanation of why this post belongs in r/{sub}. Posts without "
    "an explanation will be removed in {n} hours.",
)
_MOD_REMOVALS = (
    "This comment was removed for breaking Rule {n}: be civil. Attack the argument, not the person.",
    "This comment was removed. Low effort comments, memes and jokes are not allowed in r/{sub}.",
    "Your post was removed for breaking Rule {n}. Please read the sidebar before posting again. If you have "
    "questions, [message the mods](https://www.reddit.com/message/compose?to=/r/{sub}).",
)


def _b36(x: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while x:
        x, r = divmod(x, 36)
        out = digits[r] + out
    return out or "0"


def _inflect(words, kind: str) -> list[str]:
    out = []
    for w in words:
        if " " in w or not w.isalpha():
            continue
        if kind == "NS":
            out.append(w + "es" if w.endswith(("s", "x", "z", "ch", "sh")) else
                       w[:-1] + "ies" if w.endswith("y") and w[-2:-1] not in "aeiou" else w + "s")
        elif kind == "VD":
            out.append(_IRREGULAR.get(w) or (w + "d" if w.endswith("e") else
                       w[:-1] + "ied" if w.endswith("y") and w[-2:-1] not in "aeiou" else w + "ed"))
        elif kind == "VG":
            out.append("being" if w == "be" else w[:-1] + "ing" if w.endswith("e") and not w.endswith("ee")
                       else w + "ing")
        elif kind == "VZ":
            out.append({"be": "is", "have": "has", "do": "does", "go": "goes"}.get(w) or (
                w + "es" if w.endswith(("s", "x", "z", "ch", "sh")) else
                w[:-1] + "ies" if w.endswith("y") and w[-2:-1] not in "aeiou" else w + "s"))
    return out


class _SynthReddit:
    """Reddit-looking text, fast: each word class keeps a pool of pre-drawn (Zipf-weighted) words
    that sentence templates pop from, refilled in bulk with NumPy."""

    _REFILL = 1 << 16

    def __init__(self, seed: int):
        import numpy as np
        from faker.providers.lorem.en_US import Provider as En

        self.rng = random.Random(seed)
        self.np = np.random.default_rng(seed)
        pos = En.parts_of_speech
        nouns = [w for w in pos["noun"] if w.isalpha()]
        lex = list(_LEXICON)
        random.Random(seed + 1).shuffle(lex)
        nouns = nouns[:40] + lex + nouns[40:]  # the Reddit lexicon ranks among the common nouns
        verbs = [w for w in pos["verb"] if w.isalpha()]
        classes: dict[str, list[str]] = {
            "N": nouns, "NS": _inflect(nouns, "NS"), "VB": verbs, "VD": _inflect(verbs, "VD"),
            "VG": _inflect(verbs, "VG"), "VZ": _inflect(verbs, "VZ"),
            "A": [w for w in pos["adjective"] if w.isalpha()], "R": [w for w in pos["adverb"] if w.isalpha()],
            "NUM": [str(x) for x in (list(range(2, 13)) * 3 + list(range(13, 101)) + [150, 200, 500, 1000, 2000])],
        }
        for k, v in _FUNCTION.items():
            classes[k] = v.split("|") if "|" in v else v.split()
        self.vocabulary = {w.lower() for ws in classes.values() for p in ws for w in p.split()}
        self.foreign_vocabulary: set[str] = set()
        self._classes = {k: (np.array(v, dtype=object), self._zipf(len(v), k in _FUNCTION)) for k, v in classes.items()}
        self._pools: dict[str, list[str]] = {k: [] for k in classes}
        self._budget = -1
        self._pop = {k: p.pop for k, p in self._pools.items()}
        self._templates = []
        for t in _TEMPLATES:
            cats = re.findall(r"\{(\w+)\}", t)
            self._templates.append((re.sub(r"\{\w+\}", "{}", t), cats))
        self._foreign = {}
        for lang, (loc, subs, fw) in _FOREIGN.items():
            words = importlib.import_module(f"faker.providers.lorem.{loc}").Provider.word_list
            words = [w for w in words if " " not in w]
            self._foreign[lang] = (fw.split(), words, subs)
            self.foreign_vocabulary.update(w.lower() for w in words)
        self._ensure(1 << 14)

    def _zipf(self, n: int, function_words: bool):
        import numpy as np

        w = 1.0 / (np.arange(n) + (1.5 if function_words else 8.0))
        return w / w.sum()

    def _ensure(self, chars: int) -> None:
        """Enough words in every pool for about ``chars`` characters of text (and a margin for the
        few extra sentences a record may draw); ``_budget`` bounds what has been drawn since the
        pools were last measured, so the pools are looked at only when it runs out."""
        need = chars // 3 + 256
        self._budget -= need
        if self._budget >= 0:
            return
        for k, pool in self._pools.items():
            if len(pool) < 2 * need + self._REFILL // 2:
                words, p = self._classes[k]
                pool.extend(words[self.np.choice(len(words), size=max(2 * need, self._REFILL), p=p)].tolist())
        self._budget = min(len(p) for p in self._pools.values()) - need

    def sentence(self) -> str:
        fmt, cats = self._templates[int(self.rng.random() * len(self._templates))]
        pop = self._pop
        s = fmt.format(*[pop[c]() for c in cats])
        return s[0].upper() + s[1:]

    def english(self, chars: int, para: int = 3) -> str:
        """Sentences up to about ``chars`` characters, in paragraphs of about ``para`` sentences."""
        self._ensure(chars)
        rng = self.rng
        out: list[str] = []
        n = 0
        while n < chars:
            s = self.sentence()
            if out and rng.random() < 1 / para:
                out.append("\n\n")
            elif out:
                out.append(" ")
            out.append(s)
            n += len(s) + 1
        return "".join(out)

    def foreign(self, lang: str, chars: int) -> str:
        fw, words, _ = self._foreign[lang]
        rng = self.rng
        out, n = [], 0
        while n < chars:
            k = rng.randint(5, 14)
            s = " ".join(rng.choice(fw) if rng.random() < 0.4 else rng.choice(words) for _ in range(k))
            s = s[0].upper() + s[1:] + rng.choice(".....!?")
            out.append(s)
            n += len(s) + 1
        return " ".join(out)

    def markup(self, text: str, long: bool) -> str:
        """Reddit Markdown and Pushshift's HTML escaping, each with its own probability."""
        rng = self.rng
        r = rng.random
        if r() < 0.10:  # quoting the parent
            text = "&gt; " + self.sentence() + "\n\n" + text
        if r() < 0.05:
            text = text.replace(" and ", " &amp; ", 1)
        if r() < (0.12 if long else 0.04):
            anchor = " ".join(self._pop["N"]() for _ in range(rng.randint(1, 4)))
            link = f"[{anchor}](https://{rng.choice(_DOMAINS)}{_b36(rng.getrandbits(30))})"
            cut = text.find(" ", rng.randrange(len(text))) if len(text) > 1 else -1
            text = text + " " + link if cut < 0 else text[:cut] + " " + link + text[cut:]
        if r() < (0.06 if long else 0.03):
            text += f" https://{rng.choice(_DOMAINS)}{_b36(rng.getrandbits(30))}"
        if r() < 0.10:
            words = text.split(" ")
            i = rng.randrange(len(words))
            if words[i].isalpha():
                words[i] = ("**{}**" if r() < 0.5 else "*{}*").format(words[i])
            text = " ".join(words)
        if r() < (0.15 if long else 0.02):
            bullet = rng.choice(("* ", "- ", "1. "))
            items = "\n".join((bullet if bullet != "1. " else f"{j + 1}. ") + self.sentence()
                              for j in range(rng.randint(2, 5)))
            text += "\n\n" + items
        if long and r() < 0.03:
            text = text.replace("\n\n", "\n\n&amp;#x200B;\n\n", 1)
        if long and r() < 0.2:
            text += "\n\nTL;DR: " + self.sentence()
        if r() < (0.08 if long else 0.025):
            text += "\n\n" + rng.choice(_EDITS)
        return text

    def mutate(self, text: str) -> str:
        """A near-duplicate: a few words changed, two sentences swapped, or boilerplate added."""
        rng = self.rng
        r = rng.random()
        if r < 0.5:
            words = text.split(" ")
            for _ in range(min(4, max(1, len(words) // 40))):
                i = rng.randrange(len(words))
                words[i] = self._pop["N"]() if rng.random() < 0.5 else self._pop["A"]()
            return " ".join(words)
        if r < 0.75:
            parts = text.split(". ")
            if len(parts) >= 3:
                i = rng.randrange(len(parts) - 1)
                parts[i], parts[i + 1] = parts[i + 1], parts[i]
                return ". ".join(parts)
        return (text + "\n\n" + rng.choice(_EDITS)) if rng.random() < 0.6 else (
            "Reposting because my last one got buried.\n\n" + text)


def write_reddit_jsonl(out_dir: Path, n: int, files: int = 8, seed: int = 7, layout: str = "split",
                       stats: dict | None = None) -> list[Path]:
    """``n`` Pushshift-style records in JSON lines: ~6 % submissions (``id, author, created_utc,
    score, num_comments, title, selftext, subreddit, distinguished, stickied, over_18, is_self``)
    and ~94 % comments (``id, author, created_utc, score, body, link_id, parent_id, subreddit,
    distinguished, stickied``), in time order over ``max(1, files // 2)`` months.

    ``layout="split"``: monthly ``RS_YYYY-MM.jsonl`` (submissions) and ``RC_YYYY-MM.jsonl``
    (comments) as Pushshift ships them; ``"mixed"``: ``files`` files holding both, round robin.
    Deleted and removed bodies, AutoModerator and other bots (some with names the bot rule does
    not catch), moderator-distinguished removal notices, Markdown, quotes, links, HTML entities,
    ~3 % non-English comments, ~3.5 % near-duplicates and ~1.5 % exact duplicates of earlier
    records (same or another author). ``stats``, when given, receives what was planted."""
    rng = random.Random(seed)
    gen = _SynthReddit(seed)
    try:
        import orjson

        dumps = orjson.dumps
    except ImportError:  # pragma: no cover
        dumps = lambda o: json.dumps(o).encode()  # noqa: E731
    out_dir.mkdir(parents=True, exist_ok=True)
    months = max(1, files // 2)
    names = [f"{2019 + m // 12}-{m % 12 + 1:02d}" for m in range(months)]
    starts = [int(datetime(2019 + m // 12, m % 12 + 1, 1, tzinfo=timezone.utc).timestamp()) for m in range(months + 1)]
    if layout == "split":
        paths = [out_dir / f"R{k}_{name}.jsonl" for name in names for k in "SC"]
    elif layout == "mixed":
        paths = [out_dir / f"reddit_{i:03d}.jsonl" for i in range(max(1, files))]
    else:
        raise ValueError(f"layout: split or mixed, not {layout!r}")
    handles = [p.open("wb") for p in paths]
    n_users = max(50, n // 8)
    adj, noun = gen._classes["A"][0], gen._classes["N"][0]
    interjections = _FUNCTION["I"].split("|")

    def user(k: int) -> str:
        style = k % 4
        a, b = adj[(k * 40503) % len(adj)], noun[(k * 2654435761 >> 7) % len(noun)]
        if style == 0:
            return f"{a.capitalize()}-{b.capitalize()}-{k % 9973}"
        if style == 1:
            return f"{a}_{b}{k % 97}"
        if style == 2:
            return f"{b.capitalize()}{a.capitalize()}"[:20] + str(k % 1000)
        return f"throwaway{k}" if k % 3 == 0 else f"x{b}{k % 100}x"

    def author() -> str:
        return user(int(n_users * rng.random() ** 2.5))

    def score() -> int:
        r = rng.random()
        if r < 0.08:
            return -rng.randrange(0, 9)
        if r < 0.48:
            return 1
        return min(100_000, int(2 * rng.paretovariate(0.9)))

    st = dict(submissions=0, comments=0, deleted=0, removed=0, automoderator=0, bots=0, moderator=0, admin=0,
              non_english=0, near_duplicates=0, exact_duplicates=0, link_posts=0, short_replies=0)
    sub_len: list[int] = []
    com_len: list[int] = []
    recent_subs: list[tuple] = []   # (title, selftext, author, subreddit) of content submissions
    recent_coms: list[tuple] = []   # (body, author, subreddit)
    threads: list[list] = []        # [submission id, subreddit, last comment id] of recent submissions
    sub_k = com_k = 0
    month = 0
    lo = 0
    for i in range(n):
        while month + 1 < months and i >= (month + 1) * n // months:
            month += 1
            lo = i
        hi = (month + 1) * n // months
        gen._ensure(0)  # titles, bot texts and near-duplicates draw words too
        ts = starts[month] + (i - lo) * (starts[month + 1] - starts[month]) // max(1, hi - lo)
        is_sub = not threads or rng.random() < 0.06
        r = rng.random()
        distinguished, stickied = None, False
        if is_sub:
            st["submissions"] += 1
            sid = _b36(36 ** 5 * 11 + sub_k * 3 + rng.randrange(3))
            sub_k += 1
            sub = _SUBS[min(len(_SUBS) - 1, int(len(_SUBS) * rng.random() ** 2))]
            who = author()
            title = gen.sentence() + (" " + gen.sentence() if rng.random() < 0.25 else "")
            title = title[:300].rstrip(".") if rng.random() < 0.5 else title[:300]
            is_self = True
            if r < 0.015 and recent_subs:  # crosspost / repost: the same post again
                title, text, who0, sub0 = rng.choice(recent_subs)
                who = who0 if rng.random() < 0.6 else who
                st["exact_duplicates"] += 1
            elif r < 0.05 and recent_subs:
                title, text, who0, sub = rng.choice(recent_subs)
                text = gen.mutate(text)
                who = who0 if rng.random() < 0.5 else who
                st["near_duplicates"] += 1
            elif r < 0.10:
                who, text = "[deleted]", "[deleted]"
                st["deleted"] += 1
            elif r < 0.18:
                text = "[removed]"
                st["removed"] += 1
            elif r < 0.30:
                text, is_self = "", False
                st["link_posts"] += 1
            elif r < 0.305:
                who, distinguished, stickied = rng.choice(("AutoModerator", author())), "moderator", True
                title = f"Weekly Discussion Thread - {names[month]}"
                text = gen.markup(gen.english(600, 2), True)
                st["moderator"] += 1
            elif r < 0.32:
                lang = rng.choice(list(_FOREIGN))
                text = gen.foreign(lang, max(120, int(rng.lognormvariate(6.2, 0.7))))
                title = gen.foreign(lang, 40)[:120]
                sub = rng.choice(_FOREIGN[lang][1])
                st["non_english"] += 1
            else:
                text = gen.markup(gen.english(max(30, min(39_000, int(rng.lognormvariate(6.55, 0.85)))), 4), True)
                recent = (title, text, who, sub)
                if len(recent_subs) < 2000:
                    recent_subs.append(recent)
                else:
                    recent_subs[rng.randrange(2000)] = recent
            n_com = (0 if rng.random() < 0.25 else 1 if rng.random() < 0.2
                     else min(50_000, int(2 * rng.paretovariate(0.8))))
            rec = {"id": sid, "author": who, "created_utc": ts, "score": score(), "num_comments": n_com,
                   "title": title, "selftext": text, "subreddit": sub, "distinguished": distinguished,
                   "stickied": stickied, "over_18": rng.random() < 0.03, "is_self": is_self}
            if text not in ("", "[deleted]", "[removed]"):
                sub_len.append(len(text))
            thread = [sid, sub, None]
            if len(threads) < 500:
                threads.append(thread)
            else:
                threads[rng.randrange(500)] = thread
            out = handles[2 * month] if layout == "split" else handles[i % len(handles)]
        else:
            st["comments"] += 1
            cid = _b36(36 ** 6 * 15 + com_k * 5 + rng.randrange(5))
            com_k += 1
            thread = threads[int(len(threads) * rng.random() ** 0.5)]
            sid, sub, last = thread
            parent = f"t1_{last}" if last and rng.random() < 0.55 else f"t3_{sid}"
            who = author()
            content = False
            if r < 0.04:
                who, body = "[deleted]", "[deleted]"
                st["deleted"] += 1
            elif r < 0.07:
                body = "[removed]"
                st["removed"] += 1
            elif r < 0.085:
                who = "AutoModerator"
                body = rng.choice(_AUTOMOD).format(user=author(), sub=sub, n=rng.randint(2, 30), s1=gen.sentence(),
                                                   s2=gen.sentence()) + _BOT_FOOTER.format(sub=sub)
                distinguished, stickied = ("moderator", True) if rng.random() < 0.6 else (None, False)
                st["automoderator"] += 1
            elif r < 0.095:
                who, b = _BOTS[rng.randrange(len(_BOTS))]
                body = _BOT_BODIES[b].format(
                    sub=sub, id=_b36(rng.getrandbits(32)), n=rng.randint(1, 400), m=rng.randint(1, 12),
                    d=rng.randint(1, 28), s1=gen.sentence(), s2=gen.sentence())
                st["bots"] += 1
            elif r < 0.101:  # moderator removal notices (not always distinguished)
                body = rng.choice(_MOD_REMOVALS).format(n=rng.randint(1, 9), sub=sub)
                if rng.random() < 0.7:
                    distinguished = "moderator"
                    st["moderator"] += 1
            elif r < 0.1012:
                distinguished = "admin"
                body = gen.english(300, 3)
                st["admin"] += 1
            elif r < 0.116 and recent_coms:
                body, who0, _ = rng.choice(recent_coms)
                who = who0 if rng.random() < 0.3 else who
                st["exact_duplicates"] += 1
            elif r < 0.151 and recent_coms:
                body, who0, _ = rng.choice(recent_coms)
                body = gen.mutate(body)
                who = who0 if rng.random() < 0.5 else who
                st["near_duplicates"] += 1
            elif r < 0.181:
                lang = rng.choice(list(_FOREIGN))
                body = gen.foreign(lang, max(20, min(5000, int(rng.lognormvariate(5.0, 0.9)))))
                sub = rng.choice(_FOREIGN[lang][1])
                st["non_english"] += 1
            else:
                chars = max(2, min(9_900, int(rng.lognormvariate(4.68, 1.05))))
                if chars < 25 and rng.random() < 0.7:
                    body = rng.choice(_SHORT)
                    st["short_replies"] += 1
                else:
                    pre = rng.choice(interjections) + " " if rng.random() < 0.15 else ""
                    body = gen.markup(pre + gen.english(chars, 3), chars > 600)
                    content = len(body) >= 40
            if content:
                recent = (body, who, sub)
                if len(recent_coms) < 5000:
                    recent_coms.append(recent)
                else:
                    recent_coms[rng.randrange(5000)] = recent
            if body not in ("[deleted]", "[removed]"):
                com_len.append(len(body))
            rec = {"id": cid, "author": who, "created_utc": ts, "score": score(), "body": body,
                   "link_id": f"t3_{sid}", "parent_id": parent, "subreddit": sub, "distinguished": distinguished,
                   "stickied": stickied}
            thread[2] = cid
            out = handles[2 * month + 1] if layout == "split" else handles[i % len(handles)]
        out.write(dumps(rec) + b"\n")
    for h in handles:
        h.close()
    if stats is not None:
        sub_len.sort()
        com_len.sort()
        q = lambda xs, f: xs[int(f * (len(xs) - 1))] if xs else 0  # noqa: E731
        stats.update(st)
        stats.update(
            submission_chars_p10_p50_p90_max=[q(sub_len, .1), q(sub_len, .5), q(sub_len, .9), q(sub_len, 1)],
            comment_chars_p10_p50_p90_max=[q(com_len, .1), q(com_len, .5), q(com_len, .9), q(com_len, 1)],
            comments_under_100_chars=round(sum(1 for x in com_len if x < 100) / max(1, len(com_len)), 3),
            comments_over_1000_chars=round(sum(1 for x in com_len if x > 1000) / max(1, len(com_len)), 3),
            english_words=len(gen.vocabulary), foreign_words=len(gen.foreign_vocabulary), files=len(paths))
    return paths


def _tree_rss(pid: int) -> int:
    """Resident memory of a process and all its descendants (bytes), from /proc."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(d))
            except (OSError, IndexError, ValueError):
                pass
    total, stack = 0, [pid]
    page = os.sysconf("SC_PAGE_SIZE")
    while stack:
        p = stack.pop()
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * page
        except OSError:
            pass
        stack.extend(children.get(p, []))
    return total


def run_child(args: list[str], env: dict | None = None) -> tuple[dict, int]:
    """Run ``python <args>`` and return (the JSON it printed last, peak RSS of its process tree)."""
    here = str(Path(__file__).parent)  # Spark's Python workers import bench helpers by name
    base = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")])))
    proc = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(base, **(env or {})))
    peak = 0
    stop = threading.Event()

    def sample():
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, _tree_rss(proc.pid))
            time.sleep(0.2)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    out, err = proc.communicate()
    stop.set()
    t.join()
    if proc.returncode != 0:
        raise RuntimeError(f"child {args} failed:\n{err[-4000:]}")
    last = [ln for ln in out.splitlines() if ln.startswith("{")][-1]
    return json.loads(last), peak


def cores() -> int:
    return len(os.sched_getaffinity(0))


def cpu_work(batch):
    """A CPU-bound, pure-Python batch function (a stand-in for per-document NLP)."""
    import pyarrow as pa

    texts = batch.column("text").to_pylist()
    scores = []
    for t in texts:
        h = 0
        for _ in range(40):
            for ch in t:
                h = (h * 31 + ord(ch)) & 0xFFFFFFFF
        scores.append(h)
    yield pa.record_batch({"score": pa.array(scores, pa.int64())})
