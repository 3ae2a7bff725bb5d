"""The built-in offline controlled preference task, and its programmatic oracle.

A knowledge base of invented countries is generated from a seed. Each prompt asks for one or two facts
about a country, in HH-RLHF format. The chosen response states them plainly; the rejected response is
the chosen one with 1-3 token-attributable faults:

- ``wrong_fact``: a value replaced by another value of the same relation;
- ``rude``: an insulting sentence inserted;
- ``repetition``: a sentence needlessly repeated;
- ``hedge``: a needless hedging sentence inserted.

So chosen is the minimal fix of rejected, and the exact token labels are known. The oracle scores any
response (facts right? rude? repetitive? hedging? helpful?) so policies can be measured without an LLM
judge. The vocabulary is small, so a tiny model learns the task on 2 CPU cores in minutes.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from tlcr.data.pairs import PreferencePair

FAULT_KINDS = ("wrong_fact", "rude", "repetition", "hedge")

_SYLLABLES = ("ka", "lo", "ven", "tri", "mar", "dun", "sel", "bra", "pio", "rha", "gol", "nes", "tal",
              "quo", "zen", "fir", "ol", "um", "ast", "cor")
_ANIMALS = ("fox", "owl", "bear", "wolf", "hare", "lynx", "crane", "otter", "eagle", "horse")
_COLORS = ("red", "blue", "green", "gold", "white", "black", "purple", "silver")

# relation -> (noun used in questions, single question, answer sentence)
RELATIONS: dict[str, tuple[str, str, str]] = {
    "capital": ("capital", "What is the capital of {e}?", "The capital of {e} is {v}."),
    "river": ("main river", "Which river flows through {e}?", "The main river of {e} is the {v}."),
    "animal": ("national animal", "What is the national animal of {e}?", "The national animal of {e} is the {v}."),
    "color": ("flag color", "What color is the flag of {e}?", "The flag of {e} is {v}."),
}
_TWO_QUESTION = "What are the {a} and the {b} of {e}?"

RUDE_SENTENCES = ("Ugh, what a dumb question.", "Stop wasting my time.", "Even a child knows this.",
                  "Figure it out yourself next time.")
HEDGE_SENTENCES = ("But I am not really sure about that.", "I might be wrong though.",
                   "Maybe, I do not know.")

HUMAN = "\n\nHuman: "
ASSISTANT = "\n\nAssistant:"


@dataclass(frozen=True)
class OracleScore:
    asked: int
    correct: int
    wrong: int
    missing: int
    rude: int
    repetitions: int
    hedges: int
    helpful: bool
    score: float

    def to_dict(self) -> dict[str, float | int | bool]:
        return asdict(self)


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in re.findall(r"[^.!?]+[.!?]?", text) if s.strip()]


class ControlledTask:
    """Knowledge base, pair generator and oracle, all determined by `seed` and `n_entities`."""

    def __init__(self, seed: int = 0, n_entities: int = 24) -> None:
        if n_entities < 2:
            raise ValueError("the controlled task needs at least 2 entities")
        rng = random.Random(f"tlcr-controlled-{seed}")
        names: set[str] = set()
        while len(names) < 3 * n_entities:
            names.add("".join(rng.choice(_SYLLABLES) for _ in range(rng.choice((2, 3)))).capitalize())
        pool = sorted(names)
        rng.shuffle(pool)
        self.entities = [n + rng.choice(("ia", "land", "or")) for n in pool[:n_entities]]
        capitals = pool[n_entities:2 * n_entities]
        rivers = pool[2 * n_entities:3 * n_entities]
        self.values: dict[str, list[str]] = {"capital": capitals, "river": rivers,
                                              "animal": list(_ANIMALS), "color": list(_COLORS)}
        self.kb: dict[str, dict[str, str]] = {
            e: {"capital": capitals[i], "river": rivers[i], "animal": rng.choice(_ANIMALS),
                "color": rng.choice(_COLORS)}
            for i, e in enumerate(self.entities)
        }
        self._answer_patterns = {
            rel: re.compile(re.escape(tmpl).replace(r"\{e\}", r"(?P<e>\w+)").replace(r"\{v\}", r"(?P<v>\w+)"))
            for rel, (_, _, tmpl) in RELATIONS.items()
        }

    # ----------------------------------------------------------------- prompts and responses
    def questions(self) -> list[tuple[str, tuple[str, ...]]]:
        """Every (entity, relations) question the task can ask: single facts and ordered pairs."""
        rels = list(RELATIONS)
        out: list[tuple[str, tuple[str, ...]]] = []
        for e in self.entities:
            out += [(e, (r,)) for r in rels]
            out += [(e, (a, b)) for i, a in enumerate(rels) for b in rels[i + 1:]]
        return out

    def prompt(self, entity: str, relations: Sequence[str]) -> str:
        if len(relations) == 1:
            question = RELATIONS[relations[0]][1].format(e=entity)
        else:
            question = _TWO_QUESTION.format(a=RELATIONS[relations[0]][0], b=RELATIONS[relations[1]][0], e=entity)
        return f"{HUMAN}{question}{ASSISTANT}"

    def answer_sentences(self, entity: str, relations: Sequence[str]) -> list[str]:
        return [RELATIONS[r][2].format(e=entity, v=self.kb[entity][r]) for r in relations]

    def chosen_response(self, entity: str, relations: Sequence[str]) -> str:
        return " " + " ".join(self.answer_sentences(entity, relations))

    def corrupt(self, entity: str, relations: Sequence[str], rng: random.Random,
                n_faults: int | None = None) -> tuple[str, list[str]]:
        """The chosen response with 1-3 faults; returns (rejected response, fault kinds applied)."""
        sentences = self.answer_sentences(entity, relations)
        n = n_faults if n_faults is not None else rng.randint(1, 3)
        faults = [rng.choice(FAULT_KINDS) for _ in range(n)]
        wrong_done: set[int] = set()
        for kind in faults:
            if kind == "wrong_fact":
                idx = [i for i in range(len(relations)) if i not in wrong_done]
                if not idx:  # every fact already wrong: insult instead, still one fault
                    kind = "rude"
                else:
                    i = rng.choice(idx)
                    wrong_done.add(i)
                    rel = relations[i]
                    wrong = rng.choice([v for v in self.values[rel] if v != self.kb[entity][rel]])
                    pos = next(j for j, s in enumerate(sentences) if s == RELATIONS[rel][2].format(
                        e=entity, v=self.kb[entity][rel]))
                    sentences[pos] = RELATIONS[rel][2].format(e=entity, v=wrong)
                    continue
            if kind == "rude":
                sentences.insert(rng.choice((0, len(sentences))), rng.choice(RUDE_SENTENCES))
            elif kind == "repetition":
                facts = [j for j, s in enumerate(sentences) if s not in RUDE_SENTENCES + HEDGE_SENTENCES]
                j = rng.choice(facts)
                sentences.insert(j + 1, sentences[j])
            elif kind == "hedge":
                sentences.insert(rng.randint(1, len(sentences)), rng.choice(HEDGE_SENTENCES))
        return " " + " ".join(sentences), faults

    def pairs(self, n: int, seed: int = 0) -> list[PreferencePair]:
        """`n` preference pairs drawn (deterministically by `seed`) over all questions."""
        rng = random.Random(f"tlcr-pairs-{seed}")
        questions = self.questions()
        out = []
        for k in range(n):
            entity, rels = questions[rng.randrange(len(questions))]
            rejected, faults = self.corrupt(entity, rels, rng)
            out.append(PreferencePair(
                prompt=self.prompt(entity, rels), chosen=self.chosen_response(entity, rels), rejected=rejected,
                id=f"controlled-{seed}-{k}", meta={"entity": entity, "relations": list(rels), "faults": faults}))
        return out

    def corpus(self) -> list[str]:
        """Text covering the whole vocabulary of the task, for training a tokenizer."""
        rng = random.Random(0)
        texts = []
        for entity, rels in self.questions():
            texts.append(self.prompt(entity, rels) + self.chosen_response(entity, rels))
            texts.append(self.corrupt(entity, rels, rng, n_faults=3)[0])
        for rel, values in self.values.items():
            texts += [RELATIONS[rel][2].format(e=e, v=v) for e in self.entities[:2] for v in values]
        return texts + list(RUDE_SENTENCES) + list(HEDGE_SENTENCES)

    # ----------------------------------------------------------------- oracle
    def parse_prompt(self, prompt: str) -> tuple[str, tuple[str, ...]] | None:
        """(entity, relations) asked in the last human turn, or None if it is not a task question."""
        last = prompt.rsplit("Human:", 1)[-1].split(ASSISTANT)[0].strip()
        for rel, (_, question, _) in RELATIONS.items():
            m = re.fullmatch(re.escape(question).replace(r"\{e\}", r"(\w+)"), last)
            if m and m.group(1) in self.kb:
                return m.group(1), (rel,)
        nouns = {noun: rel for rel, (noun, _, _) in RELATIONS.items()}
        m = re.fullmatch(r"What are the (.+) and the (.+) of (\w+)\?", last)
        if m and m.group(1) in nouns and m.group(2) in nouns and m.group(3) in self.kb:
            return m.group(3), (nouns[m.group(1)], nouns[m.group(2)])
        return None

    def oracle(self, prompt: str, response: str) -> OracleScore:
        """Score a response: (correct − wrong) / asked − 0.5·rude − 0.25·(repetitions + hedges).

        A perfect answer scores 1.0. Helpful means every asked fact stated correctly and nothing wrong.
        """
        parsed = self.parse_prompt(prompt)
        if parsed is None:
            raise ValueError(f"prompt is not a controlled-task question: {prompt[-120:]!r}")
        entity, rels = parsed
        correct = wrong = 0
        for rel in rels:
            stated = [m.group("v") for m in self._answer_patterns[rel].finditer(response) if m.group("e") == entity]
            truth = self.kb[entity][rel]
            correct += int(truth in stated)
            wrong += sum(v != truth for v in stated)
        missing = len(rels) - correct
        low = response.lower()
        rude = sum(low.count(s.lower()) for s in RUDE_SENTENCES)
        hedges = sum(low.count(s.lower()) for s in HEDGE_SENTENCES)
        # rude and hedging sentences are already penalised; repetition counts repeated content
        boiler = {s.lower() for s in RUDE_SENTENCES + HEDGE_SENTENCES}
        sents = [s for s in _sentences(response) if s.lower() not in boiler]
        repetitions = sum(1 for i in range(1, len(sents)) if sents[i] in sents[:i])
        repetitions += len(re.findall(r"\b(\w+) \1\b", response))
        score = (correct - wrong) / len(rels) - 0.5 * rude - 0.25 * (repetitions + hedges)
        return OracleScore(asked=len(rels), correct=correct, wrong=wrong, missing=missing, rude=rude,
                           repetitions=repetitions, hedges=hedges, helpful=(missing == 0 and wrong == 0),
                           score=score)
