"""The built-in offline controlled preference task, its held-out question split, and its programmatic oracle.

A knowledge base of invented countries is generated from a seed. Each prompt asks for one or two facts
about a country, in HH-RLHF format. The ideal (chosen) response states, for each asked relation, the fact
and the supporting detail that goes with it ("The capital of Kalor is Venmar. It is also the largest
city."). Details carry no value of their own: a 2-layer model trained for seconds copies a multi-token
name into a second sentence unreliably (a first design whose details repeated the value: the demo's SFT
policy stated a wrong value in about 40 % of its detail sentences on 64 test prompts), and the point of
details is completeness, which positive token rewards should teach.
The rejected response is the chosen one with 1-2 faults of three directions:

- insertions a minimal revision deletes (→ negative tokens): ``rude``, ``hedge``, ``repetition``;
- omissions a minimal revision adds back (→ positive tokens): ``missing_fact``, ``missing_detail``;
- substitutions (negative in the rejected, positive in the revision): ``wrong_fact``.

Insertions and omissions are drawn equally often, so a longer response is not more often the preferred
one (`length_balance` measures it). Chosen is still the minimal fix of rejected, so the exact token labels
are known. The oracle rewards completeness (facts and details stated right) and penalises faults, so
policies can be measured without an LLM judge.

Questions (entity × relations) are split once into train / validation / test parts (`question_split`):
pairs, and so every SFT, reward-model and PPO prompt, come from train questions only; validation and test
prompts are questions no training stage saw, while each of their facts is stated in some train question.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

from tlcr.core.data.pairs import PreferencePair

INSERTION_FAULTS = ("rude", "hedge", "repetition")
OMISSION_FAULTS = ("missing_fact", "missing_detail")
SUBSTITUTION_FAULTS = ("wrong_fact",)
FAULT_KINDS = INSERTION_FAULTS + OMISSION_FAULTS + SUBSTITUTION_FAULTS
# Sampling weight of each fault kind: insertions and omissions 0.4 each, substitutions 0.2.
FAULT_WEIGHTS = {"rude": 0.4 / 3, "hedge": 0.4 / 3, "repetition": 0.4 / 3, "missing_fact": 0.2,
                 "missing_detail": 0.2, "wrong_fact": 0.2}

QuestionPart = Literal["train", "validation", "test"]
QUESTION_PARTS: tuple[QuestionPart, ...] = ("train", "validation", "test")
Question = tuple[str, tuple[str, ...]]  # (entity, asked relations)

_SYLLABLES = ("ka", "lo", "ven", "tri", "mar", "dun", "sel", "bra", "pio", "rha", "gol", "nes", "tal",
              "quo", "zen", "fir", "ol", "um", "ast", "cor")
_ANIMALS = ("fox", "owl", "bear", "wolf", "hare", "lynx", "crane", "otter", "eagle", "horse")
_COLORS = ("red", "blue", "green", "gold", "white", "black", "purple", "silver")

# relation -> (noun used in questions, single question, fact sentence, supporting-detail sentence)
RELATIONS: dict[str, tuple[str, str, str, str]] = {
    "capital": ("capital", "What is the capital of {e}?", "The capital of {e} is {v}.",
                "It is also the largest city."),
    "river": ("main river", "Which river flows through {e}?", "The main river of {e} is the {v}.",
              "It is also the longest river."),
    "animal": ("national animal", "What is the national animal of {e}?", "The national animal of {e} is the {v}.",
               "It is shown on the coins."),
    "color": ("flag color", "What color is the flag of {e}?", "The flag of {e} is {v}.",
              "People wear it on holidays."),
}
_TWO_QUESTION = "What are the {a} and the {b} of {e}?"

RUDE_SENTENCES = ("Ugh, what a dumb question.", "Stop wasting my time.", "Even a child knows this.",
                  "Figure it out yourself next time.")
HEDGE_SENTENCES = ("But I am not really sure about that.", "I might be wrong though.",
                   "Maybe, I do not know.")

HUMAN = "\n\nHuman: "
ASSISTANT = "\n\nAssistant:"

DETAIL_WEIGHT = 0.5  # a supporting detail counts half a requested fact in the oracle
# An invented name can hide an English word ("Talmar"): details are matched as whole sentences.


@dataclass(frozen=True)
class OracleScore:
    asked: int
    correct: int  # asked facts stated with the right value
    wrong: int  # fact statements with a wrong value
    missing: int  # asked facts not stated right
    details: int  # asked relations whose supporting detail is stated
    missing_details: int
    rude: int
    repetitions: int
    hedges: int
    helpful: bool  # every asked fact right, none wrong
    complete: bool  # helpful, and every asked relation's detail stated
    score: float

    @property
    def style_faults(self) -> int:
        """Inserted faults a minimal revision deletes: rude sentences, repetitions and hedges."""
        return self.rude + self.repetitions + self.hedges

    @property
    def details_share(self) -> float:
        """Share of the asked relations whose supporting detail is stated (0 when nothing is asked)."""
        return self.details / self.asked if self.asked else 0.0

    @property
    def omitted_facts(self) -> int:
        """Asked facts not stated right that no wrong statement accounts for: left out."""
        return max(0, self.missing - self.wrong)

    def to_dict(self) -> dict[str, float | int | bool]:
        return asdict(self)


@dataclass
class _Sentence:
    tag: str  # fact | detail | rude | hedge | repeat
    relation: str | None
    text: str
    touched: bool = False  # already changed by a fault (not picked again)


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in re.findall(r"[^.!?]+[.!?]?", text) if s.strip()]


def _value_pattern(template: str) -> re.Pattern[str]:
    return re.compile(re.escape(template).replace(r"\{e\}", r"(?P<e>\w+)").replace(r"\{v\}", r"(?P<v>\w+)"))


class ControlledTask:
    """Knowledge base, question split, pair generator and oracle, all determined by the constructor's arguments."""

    # 48 validation questions (as many as test): tuning picks among points whose validation oracles differ by
    # 0.02-0.1, and 24 questions x 4 samples could not tell them apart (docs/results.md). Test is drawn first,
    # so its 48 questions do not depend on validation_fraction.
    def __init__(self, seed: int = 0, n_entities: int = 24, *, validation_fraction: float = 0.2,
                 test_fraction: float = 0.2) -> None:
        if n_entities < 2:
            raise ValueError("the controlled task needs at least 2 entities")
        if validation_fraction < 0 or test_fraction < 0 or validation_fraction + test_fraction >= 0.5:
            raise ValueError("validation and test fractions must be non-negative and hold out under half the "
                             f"questions, got {validation_fraction} and {test_fraction}")
        self.seed = seed
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
        self._fact_patterns = {rel: _value_pattern(spec[2]) for rel, spec in RELATIONS.items()}
        self._split = self._split_questions(validation_fraction, test_fraction)

    # ----------------------------------------------------------------- questions and their split
    def questions(self) -> list[Question]:
        """Every (entity, relations) question the task can ask: single facts and ordered pairs."""
        rels = list(RELATIONS)
        out: list[Question] = []
        for e in self.entities:
            out += [(e, (r,)) for r in rels]
            out += [(e, (a, b)) for i, a in enumerate(rels) for b in rels[i + 1:]]
        return out

    def _split_questions(self, validation_fraction: float, test_fraction: float) -> dict[str, list[Question]]:
        """Shuffle the questions; move them to test, then validation, while every fact a held-out question
        asks stays asked by some train question of the same entity (so it is learnable from training data)."""
        questions = self.questions()
        order = list(questions)
        random.Random(f"tlcr-questions-{self.seed}").shuffle(order)
        train = set(questions)
        held: dict[str, list[Question]] = {"test": [], "validation": []}
        targets = {"test": round(test_fraction * len(questions)),
                   "validation": round(validation_fraction * len(questions))}
        for part in ("test", "validation"):
            for question in order:
                if len(held[part]) >= targets[part]:
                    break
                if question not in train:
                    continue
                entity, rels = question
                rest = train - {question}
                if all(any(e == entity and r in q_rels for e, q_rels in rest) for r in rels):
                    train = rest
                    held[part].append(question)
        return {"train": [q for q in questions if q in train], **held}

    def question_split(self) -> dict[str, list[Question]]:
        """The fixed train / validation / test questions (disjoint; every question in exactly one part)."""
        return {part: list(qs) for part, qs in self._split.items()}

    def prompts(self, part: QuestionPart) -> list[str]:
        """The prompt of every question of `part`, once each, in a fixed order."""
        return [self.prompt(e, rels) for e, rels in self._part(part)]

    def _part(self, part: str) -> list[Question]:
        if part not in self._split:
            raise ValueError(f"question part must be one of {', '.join(QUESTION_PARTS)}, not {part!r}")
        return self._split[part]

    # ----------------------------------------------------------------- prompts and responses
    def prompt(self, entity: str, relations: Sequence[str]) -> str:
        if len(relations) == 1:
            question = RELATIONS[relations[0]][1].format(e=entity)
        else:
            question = _TWO_QUESTION.format(a=RELATIONS[relations[0]][0], b=RELATIONS[relations[1]][0], e=entity)
        return f"{HUMAN}{question}{ASSISTANT}"

    def _ideal(self, entity: str, relations: Sequence[str]) -> list[_Sentence]:
        out = []
        for rel in relations:
            value = self.kb[entity][rel]
            out.append(_Sentence("fact", rel, RELATIONS[rel][2].format(e=entity, v=value)))
            out.append(_Sentence("detail", rel, RELATIONS[rel][3]))
        return out

    def answer_sentences(self, entity: str, relations: Sequence[str]) -> list[str]:
        return [s.text for s in self._ideal(entity, relations)]

    def chosen_response(self, entity: str, relations: Sequence[str]) -> str:
        return " " + " ".join(self.answer_sentences(entity, relations))

    def corrupt(self, entity: str, relations: Sequence[str], rng: random.Random,
                n_faults: int | None = None) -> tuple[str, list[str]]:
        """The chosen response with 1-2 faults; returns (rejected response, fault kinds applied in order)."""
        sentences = self._ideal(entity, relations)
        n = n_faults if n_faults is not None else rng.randint(1, 2)
        applied: list[str] = []
        for _ in range(n):
            kinds = [k for k in FAULT_KINDS if self._applicable(k, sentences)]
            kind = rng.choices(kinds, weights=[FAULT_WEIGHTS[k] for k in kinds])[0]
            self._apply(kind, sentences, entity, rng)
            applied.append(kind)
        return " " + " ".join(s.text for s in sentences), applied

    @staticmethod
    def _untouched(sentences: Sequence[_Sentence], tag: str) -> list[int]:
        return [i for i, s in enumerate(sentences) if s.tag == tag and not s.touched]

    def _applicable(self, kind: str, sentences: Sequence[_Sentence]) -> bool:
        if kind in OMISSION_FAULTS:  # never omit the last statement: an empty response is no answer at all
            content = sum(s.tag in ("fact", "detail") for s in sentences)
            return content >= 2 and bool(self._untouched(sentences, kind.removeprefix("missing_")))
        if kind in SUBSTITUTION_FAULTS:
            return bool(self._untouched(sentences, kind.removeprefix("wrong_")))
        if kind == "repetition":
            return any(s.tag in ("fact", "detail") for s in sentences)
        return True

    def _apply(self, kind: str, sentences: list[_Sentence], entity: str, rng: random.Random) -> None:
        if kind == "rude":
            sentences.insert(rng.choice((0, len(sentences))), _Sentence("rude", None, rng.choice(RUDE_SENTENCES)))
        elif kind == "hedge":
            sentences.insert(rng.randint(1, len(sentences)), _Sentence("hedge", None, rng.choice(HEDGE_SENTENCES)))
        elif kind == "repetition":
            j = rng.choice([i for i, s in enumerate(sentences) if s.tag in ("fact", "detail")])
            sentences[j].touched = True  # omitting or changing it later would undo the repetition
            sentences.insert(j + 1, _Sentence("repeat", sentences[j].relation, sentences[j].text, touched=True))
        elif kind in OMISSION_FAULTS:
            del sentences[rng.choice(self._untouched(sentences, kind.removeprefix("missing_")))]
        else:  # wrong_fact: another value of the same relation
            i = rng.choice(self._untouched(sentences, "fact"))
            rel = sentences[i].relation
            assert rel is not None
            wrong = rng.choice([v for v in self.values[rel] if v != self.kb[entity][rel]])
            sentences[i] = _Sentence("fact", rel, RELATIONS[rel][2].format(e=entity, v=wrong), touched=True)

    def pairs(self, n: int, seed: int = 0, part: QuestionPart = "train") -> list[PreferencePair]:
        """`n` preference pairs drawn (deterministically by `seed`) over the questions of `part`."""
        rng = random.Random(f"tlcr-pairs-{seed}")
        questions = self._part(part)
        out = []
        for k in range(n):
            entity, rels = questions[rng.randrange(len(questions))]
            rejected, faults = self.corrupt(entity, rels, rng)
            out.append(PreferencePair(
                prompt=self.prompt(entity, rels), chosen=self.chosen_response(entity, rels), rejected=rejected,
                id=f"controlled-{seed}-{k}", meta={"entity": entity, "relations": list(rels), "faults": faults,
                                                   "part": part}))
        return out

    def corpus(self) -> list[str]:
        """Text covering the whole vocabulary of the task, for training a tokenizer (train questions only)."""
        rng = random.Random(0)
        texts = []
        for entity, rels in self._part("train"):
            texts.append(self.prompt(entity, rels) + self.chosen_response(entity, rels))
            texts.append(self.corrupt(entity, rels, rng, n_faults=2)[0])
        for rel, values in self.values.items():
            texts += [RELATIONS[rel][2].format(e=e, v=v) + " " + RELATIONS[rel][3]
                      for e in self.entities[:2] for v in values]
        return texts + list(RUDE_SENTENCES) + list(HEDGE_SENTENCES)

    # ----------------------------------------------------------------- oracle
    def parse_prompt(self, prompt: str) -> Question | None:
        """(entity, relations) asked in the last human turn, or None if it is not a task question."""
        last = prompt.rsplit("Human:", 1)[-1].split(ASSISTANT)[0].strip()
        for rel, spec in RELATIONS.items():
            m = re.fullmatch(re.escape(spec[1]).replace(r"\{e\}", r"(\w+)"), last)
            if m and m.group(1) in self.kb:
                return m.group(1), (rel,)
        nouns = {spec[0]: rel for rel, spec in RELATIONS.items()}
        m = re.fullmatch(r"What are the (.+) and the (.+) of (\w+)\?", last)
        if m and m.group(1) in nouns and m.group(2) in nouns and m.group(3) in self.kb:
            return m.group(3), (nouns[m.group(1)], nouns[m.group(2)])
        return None

    def oracle(self, prompt: str, response: str) -> OracleScore:
        """Score a response; a perfect answer scores 1.0:

        (correct − wrong + ½·details) / (1.5·asked) − 0.5·rude − 0.25·(repetitions + hedges).
        """
        parsed = self.parse_prompt(prompt)
        if parsed is None:
            raise ValueError(f"prompt is not a controlled-task question: {prompt[-120:]!r}")
        entity, rels = parsed
        correct = wrong = details = 0
        stated_sentences = set(_sentences(response))
        for rel in rels:
            truth = self.kb[entity][rel]
            stated = [m.group("v") for m in self._fact_patterns[rel].finditer(response) if m.group("e") == entity]
            correct += int(truth in stated)
            wrong += sum(v != truth for v in stated)
            details += int(RELATIONS[rel][3] in stated_sentences)
        low = response.lower()
        rude = sum(low.count(s.lower()) for s in RUDE_SENTENCES)
        hedges = sum(low.count(s.lower()) for s in HEDGE_SENTENCES)
        # rude and hedging sentences are already penalised; repetition counts repeated content
        boiler = {s.lower() for s in RUDE_SENTENCES + HEDGE_SENTENCES}
        sents = [s for s in _sentences(response) if s.lower() not in boiler]
        repetitions = sum(1 for i in range(1, len(sents)) if sents[i] in sents[:i])
        repetitions += len(re.findall(r"\b(\w+) \1\b", response))
        asked = len(rels)
        knowledge = (correct - wrong + DETAIL_WEIGHT * details) / ((1 + DETAIL_WEIGHT) * asked)
        score = knowledge - 0.5 * rude - 0.25 * (repetitions + hedges)
        helpful = correct == asked and wrong == 0
        return OracleScore(asked=asked, correct=correct, wrong=wrong, missing=asked - correct, details=details,
                           missing_details=asked - details, rude=rude, repetitions=repetitions, hedges=hedges,
                           helpful=helpful, complete=helpful and details == asked, score=score)


def length_balance(pairs: Sequence[PreferencePair]) -> dict[str, float]:
    """How much response length alone tells chosen from rejected, in characters: the share of pairs whose
    chosen response is longer (ties ½) and the mean length difference chosen − rejected."""
    if not pairs:
        raise ValueError("no pairs")
    longer = sum(1.0 if len(p.chosen) > len(p.rejected) else 0.5 if len(p.chosen) == len(p.rejected) else 0.0
                 for p in pairs)
    return {"chosen_longer": longer / len(pairs),
            "mean_length_difference": sum(len(p.chosen) - len(p.rejected) for p in pairs) / len(pairs)}
