"""Retrieval and the answering programs on one real corpus (200 GSM8K questions, real embedder).

The teacher is scripted to write guides from each cluster's most frequent words, so guides
differ the way real ones do (by topic); the student is scripted to answer from a table, and
its recorded prompts show what each method put in front of it.
"""

import collections
import copy
import json
import pickle
import re

import dspy
import numpy as np
import pytest
from helpers.scripted import scripted_lm

from instret import CachedEmbedder, Corpus, EmbedderMismatchError, EmbeddingCache, build_corpus, make_lm
from instret.teaching.build import EMBEDDINGS
from instret.programs.answering import GENERIC_GUIDE, NO_REFERENCE, ChainOfThoughtQA, InstructionRetrievalQA, ZeroShotQA
from instret.programs.methods import METHODS, make_program
from instret.data.questions import normalize_text
from instret.signatures.answering import REASONING_DESC
from instret.corpus.retrieval import GuideRetriever, PassageRetriever, vote_for_guides
from instret.data.scoring import score

pytestmark = pytest.mark.slow

_STOP = set("what which that this with from have they their them then than there were will would each many "
            "much more does into your about after before other some when also only over such".split())
UNRELATED = "The mitochondria is the powerhouse of the cell. Which organelle produces most of the ATP?"
OPTIONS = {"A": "12", "B": "18", "C": "24", "D": "30"}


def topic_teacher(system: str, user: str) -> str:
    """A guide named and described by the words its cluster's questions use most."""
    match = re.search(r"example_questions ## \]\]\s*(.+)", user, re.S)
    examples = json.loads(match.group(1).split("\n\n[[ ##")[0])
    words = collections.Counter(word for example in examples
                                for word in re.findall(r"[a-z]{4,}", example.split("\nWorked solution:")[0].lower())
                                if word not in _STOP)
    top = [word for word, _ in words.most_common(12)]
    guide = {"title": f"Problems about {', '.join(top[:3])}", "applies_when": f"Questions about {', '.join(top[:8])}.",
             "background": f"Key ideas: {', '.join(top)}.",
             "procedure": ["List the known quantities.", "Write the relation between them.", "Compute step by step."],
             "pitfalls": ["Mixing up units."]}
    return f"[[ ## guide ## ]]\n{json.dumps(guide)}\n\n[[ ## completed ## ]]"


class Student:
    """Answers each question from a table (normalized question text -> answer); records system prompts."""

    def __init__(self, answers: dict[str, str]):
        self.answers = {normalize_text(q): a for q, a in answers.items()}
        self.systems: list[str] = []

    def __call__(self, system: str, user: str) -> str:
        self.systems.append(system)
        section = user.rsplit("[[ ## question ## ]]", 1)[-1]
        question = re.split(r"\n\n(?:\[\[ ## |Respond with)", section)[0].strip()
        answer = self.answers.get(normalize_text(question), "0")
        return f"[[ ## reasoning ## ]]\nFollow the steps.\n\n[[ ## answer ## ]]\n{answer}\n\n[[ ## completed ## ]]"


def student_lm(answers):
    student = Student(answers)
    lm, engine = scripted_lm(student)
    return lm, engine, student


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, sample_questions, embedder):
    folder = tmp_path_factory.mktemp("answering-corpus")
    teacher, _ = scripted_lm(topic_teacher)
    report = build_corpus(sample_questions, folder, domain="grade-school math", teacher=teacher, embedder=embedder,
                          progress=False)
    assert report.complete and report.n_clusters >= 3
    return Corpus.open(folder)


@pytest.fixture(scope="module")
def central(corpus, sample_questions, embedder):
    """The two members nearest each guide's centroid: (question, guide id) pairs."""
    by_id = {q.id: q for q in sample_questions}
    cached = CachedEmbedder(embedder, EmbeddingCache(corpus.folder / EMBEDDINGS))  # the build's vectors
    pairs = []
    for guide in corpus.guides():
        members = [by_id[i] for i in guide.question_ids]
        closeness = cached.encode([q.render() for q in members]) @ guide.centroid
        pairs += [(members[i], guide.id) for i in np.argsort(-closeness)[:2]]
    return pairs


@pytest.fixture(scope="module")
def gold(sample_questions):
    return {q.text: q.answer for q in sample_questions}


def test_retriever_finds_the_questions_own_guide(corpus, central, embedder):
    for mode, least in (("questions", 0.9), ("guides", 0.75)):
        retrieve = GuideRetriever(corpus, k=2, mode=mode, min_similarity=0.0, embedder=embedder)
        found = [retrieve(question.render()) for question, _ in central]
        # Questions mode may return fewer than k: all the neighbours can vote for one guide.
        assert all(1 <= len(f.guides) == len(f.scores) == len(f.ids) <= 2 for f in found)
        assert mode == "questions" or all(len(f.ids) == 2 for f in found)
        assert all(f.guides[0].title == next(g.guide.title for g in corpus.guides() if g.id == f.ids[0]) for f in found)
        assert all(f.scores == sorted(f.scores, reverse=True) for f in found)
        own = [guide_id in f.ids for f, (_, guide_id) in zip(found, central)]
        # Scripted guides share most of their wording, so guide-text matching is not perfect.
        assert sum(own) >= least * len(own), (mode, own)
        if mode == "questions":
            # The member itself votes for its own guide with similarity 1; its neighbours add to that.
            assert all(f.similarities[f.ids.index(guide_id)] == pytest.approx(1.0, abs=1e-4)
                       for f, (_, guide_id) in zip(found, central) if guide_id in f.ids)
            assert any(f.scores[0] > 1.5 for f in found)
        else:
            assert all(f.scores == f.similarities for f in found)


def test_nothing_below_min_similarity(corpus, central, embedder):
    member = central[0][0].render()
    for mode in ("guides", "questions"):
        found = GuideRetriever(corpus, k=2, mode=mode, min_similarity=0.5, embedder=embedder)(UNRELATED)
        assert found.guides == found.scores == found.ids == []
    assert GuideRetriever(corpus, k=2, mode="guides", min_similarity=0.99, embedder=embedder)(member).ids == []
    assert len(GuideRetriever(corpus, k=2, mode="guides", min_similarity=0.0, embedder=embedder)(member).ids) == 2


def test_votes_sum_similarities():
    neighbours = [("q1", 0.9, {"guide_id": "a"}), ("q2", 0.5, {"guide_id": "b"}), ("q3", 0.5, {"guide_id": "b"}),
                  ("q4", 0.45, {"guide_id": "b"}), ("q5", 0.2, {"guide_id": "c"})]
    assert vote_for_guides(neighbours, 2, 0.3) == [("b", pytest.approx(1.45), 0.5), ("a", 0.9, 0.9)]
    assert vote_for_guides(neighbours, 5, 0.3) == vote_for_guides(neighbours, 2, 0.3)  # "c" is below the floor
    assert vote_for_guides(neighbours, 2, 0.95) == []


def test_retriever_is_not_an_lm_program(corpus, central, embedder):
    program = InstructionRetrievalQA(GuideRetriever(corpus, k=2, embedder=embedder), kind="numeric")
    assert [name for name, _ in program.named_predictors()] == ["answer.predict"]
    assert list(program.dump_state()) == ["answer.predict"]
    query = central[0][0].render()
    first = program.retrieve(query)

    copied = program.deepcopy()  # what optimizers do; the open corpus is shared, not copied
    assert copied.retrieve._opened is program.retrieve._opened and copied.answer is not program.answer
    assert program.reset_copy().retrieve(query).ids == first.ids

    pickled = pickle.dumps(program.retrieve)
    assert len(pickled) < 2000 and b"guide_json" not in pickled  # settings only, never the store
    assert pickle.loads(pickled)(query).ids == first.ids  # reopens the corpus by its folder

    class OtherEmbedder:
        id = "sentence-transformers/some-other-model"

        def encode(self, texts):
            return np.ones((len(texts), 8), dtype=np.float32)

    with pytest.raises(EmbedderMismatchError, match="all-MiniLM-L6-v2"):
        GuideRetriever(corpus, embedder=OtherEmbedder())(query)
    with pytest.raises(ValueError, match="mode"):
        GuideRetriever(corpus, mode="centroids", embedder=embedder)(query)


def test_student_sees_the_retrieved_guides(corpus, central, embedder, gold):
    question, _ = central[0]
    lm, engine, student = student_lm(gold)
    retriever = GuideRetriever(corpus, k=2, mode="questions", embedder=embedder)
    program = InstructionRetrievalQA(retriever, kind="numeric")
    with dspy.context(lm=lm):
        prediction = program(question.text)
    found = retriever(question.text)
    prompt = engine.prompts[-1]
    for n, guide in enumerate(found.guides, 1):
        assert f"### Guide {n}: {guide.title}\nApplies when: {guide.applies_when}" in prompt
        assert guide.procedure[0] in prompt
    assert "[[ ## guides ## ]]" in prompt and "reference material" in student.systems[-1]
    assert prediction.reference_ids == found.ids and prediction.reference_scores == found.scores
    assert isinstance(prediction.answer, float) and prediction.answer == float(question.answer)
    assert prediction.reasoning == "Follow the steps."
    assert score("numeric", prediction.answer, question.answer)

    with dspy.context(lm=lm):
        unmatched = InstructionRetrievalQA(GuideRetriever(corpus, min_similarity=0.99, embedder=embedder))(UNRELATED)
    assert NO_REFERENCE in engine.prompts[-1] and "### Guide" not in engine.prompts[-1]
    assert unmatched.reference_ids == []


#: The single-model methods this file covers; the teacher-intervention and solution-guidance
#: methods (also in METHODS) have their own tests.
BASELINES = ("zero_shot", "cot", "passage_rag", "generic_guide", "instruction_retrieval")


def test_each_baseline_shows_what_it_claims(corpus, central, embedder, gold):
    question, _ = central[0]
    lm, engine, student = student_lm(gold)
    programs = {name: make_program(name, corpus, "numeric", k=2, embedder=embedder) for name in BASELINES}
    prompts, systems = {}, {}
    with dspy.context(lm=lm):
        for name, program in programs.items():
            prediction = program(question.text)
            assert prediction.answer == float(question.answer), name
            prompts[name], systems[name] = engine.prompts[-1], student.systems[-1]

    assert "[[ ## guides ## ]]" not in prompts["zero_shot"] and "### " not in prompts["zero_shot"]
    assert "reasoning" not in systems["zero_shot"] and "reasoning" in systems["cot"]
    for name in BASELINES[1:]:  # every reasoning method asks for the steps, not just `${reasoning}`
        assert f"`reasoning` (str): {REASONING_DESC}" in systems[name], name
    assert "[[ ## guides ## ]]" not in prompts["cot"]

    passages = PassageRetriever(corpus, k=2, embedder=embedder)(question.text)
    assert question.id not in passages.ids and len(passages.ids) == 2  # never its own solution
    rag = prompts["passage_rag"]
    assert rag.count("Worked solution:") == 2 and "####" in rag and "### Guide" not in rag
    for n, passage in enumerate(passages.passages, 1):
        assert f"### Example {n}\nQuestion: {passage.text}\nWorked solution: {passage.solution[:200]}" in rag
    assert question.solution not in rag

    generic = prompts["generic_guide"]
    assert f"### Guide 1: {GENERIC_GUIDE.title}" in generic and GENERIC_GUIDE.procedure[0] in generic
    assert "### Guide 2" not in generic and "Worked solution" not in generic

    assert "### Guide 1: Problems about" in prompts["instruction_retrieval"]


def test_typed_answers_for_each_kind(corpus, embedder):
    question = "Tom buys 3 boxes of 6 pens. How many pens does he have?"
    lm, engine, _ = student_lm({question: "B", "What is 1 divided by 2?": "\\dfrac{1}{2}"})
    with dspy.context(lm=lm):
        zero_shot = ZeroShotQA("choice")(question, options=OPTIONS)
        guided = InstructionRetrievalQA(GuideRetriever(corpus, embedder=embedder), kind="choice")(question, OPTIONS)
        expression = ChainOfThoughtQA("expression")("What is 1 divided by 2?")
    assert zero_shot.answer == guided.answer == "B" and score("choice", guided.answer, "B")
    assert "[[ ## options ## ]]\nA. 12\nB. 18\nC. 24\nD. 30" in engine.prompts[-2]
    assert isinstance(expression.answer, str) and score("expression", expression.answer, "0.5")

    lm, _, _ = student_lm({"How many?": "18.5"})
    with dspy.context(lm=lm):
        assert ChainOfThoughtQA("numeric")("How many?").answer == 18.5


def test_save_then_load_into_a_fresh_program(corpus, central, embedder, gold, tmp_path):
    question, _ = central[1]
    program = make_program("instruction_retrieval", corpus, "numeric", mode="questions", embedder=embedder)
    demo = dspy.Example(question="A demo question about 7 kites?", guides="(demo guides)", reasoning="7 kites.",
                        answer=7.0).with_inputs("question", "guides")
    program.answer.predict.demos = [demo]
    program.answer.predict.signature = program.answer.predict.signature.with_instructions("Tuned instructions.")
    # Even a student set on the predictors themselves stays out of the saved state.
    program.set_lm(make_lm("openai/some-student", api_base="http://127.0.0.1:9/v1", api_key="sk-secret"))
    path = tmp_path / "program.json"
    program.save(path)
    text = path.read_text()
    for secret in ("api_base", "api_key", "sk-secret", "127.0.0.1"):
        assert secret not in text
    saved = json.loads(text)
    assert set(saved) == {"answer.predict", "metadata"} and saved["answer.predict"]["lm"] is None

    # A fresh program from the corpus folder alone: the corpus's own embedder is loaded.
    fresh = make_program("instruction_retrieval", corpus.folder, "numeric", mode="questions")
    fresh.load(path)
    assert fresh.answer.predict.demos[0]["answer"] == 7.0
    lm, engine, student = student_lm(gold)
    with dspy.context(lm=lm):
        prediction = fresh(question.text)
    assert engine.calls == 1 and prediction.answer == float(question.answer)
    assert "A demo question about 7 kites?" in engine.prompts[-1] and "Tuned instructions." in student.systems[-1]
    assert prediction.reference_ids == program.retrieve(question.text).ids


def test_registry_refuses_what_it_cannot_build(corpus):
    assert set(BASELINES) <= set(METHODS)  # the two-model methods are tested with their own programs
    assert isinstance(make_program("cot", None, "choice"), ChainOfThoughtQA)
    with pytest.raises(ValueError, match="corpus"):
        make_program("passage_rag", None, "numeric")
    with pytest.raises(ValueError, match="unknown method"):
        make_program("few_shot", corpus, "numeric")
    with pytest.raises(TypeError, match="min_similarty"):
        make_program("instruction_retrieval", corpus, "numeric", min_similarty=0.2)
    with pytest.raises(ValueError, match="answer kind"):
        make_program("cot", None, "letters")
    assert copy.deepcopy(make_program("generic_guide", None, "expression")).guide == GENERIC_GUIDE
