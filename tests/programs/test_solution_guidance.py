"""The guidance validator's cases, and the two-model SolutionGuidanceQA: each model its own, tokens
per model, a broken guide reply still used, and a save/load round trip under other models."""

from __future__ import annotations

import json

import dspy
import pytest
from helpers.scripted import scripted_lm
from helpers.sg import GOOD_GUIDANCE, answer_reply, guidance_reply

from instret.data.guidance import check_guidance, guidance_metric, plan_only, readable_solution
from instret.programs.methods import NEEDS_TEACHER, make_program
from instret.programs.solution_guidance import SolutionGuidanceQA
from instret.training.optimize import save_program

CLIPS = ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
         "How many clips did Natalia sell altogether in April and May?")
PLAN = ("Asked: the total number of clips sold in April and May.\nGiven: 48 clips in April; half as many in May.\n"
        "Steps:\n1. Find the May clips as half of the April clips.\n2. Add the April and May clips.")


@pytest.mark.parametrize("guidance, reasons", [
    (PLAN, ()),
    (PLAN + "\n3. The answer is 72.", ("states_answer", "new_number")),
    (PLAN + "\n3. Altogether Natalia sold 72 clips.", ("states_answer", "new_number")),
    (PLAN + "\n3. 48 / 2 = 17 clips in May.", ("computes", "new_number")),   # an intermediate result
    (PLAN + "\n3. May clips = 17.", ("computes", "new_number")),
    (PLAN + "\n3. April clips = 48.", ()),                                     # restating a given is no computation
    (PLAN + "\n3. Expect about 31 clips in May.", ("new_number",)),
    (PLAN + "\n3. Convert to a percentage by multiplying by 100.", ()),        # a unit constant
    (" ".join(["Think about the clips."] * 70), ("too_long", "no_steps")),
    ("Asked: the clips sold in April and May. Given: the April clips, and half as many in May.", ("no_steps",)),
    ("Asked: the total. Steps: 1. Halve the April clips. 2. Add both months.", ()),  # steps inline
    ("   ", ("empty",)),
])
def test_validator_cases(guidance, reasons):
    check = check_guidance(guidance, CLIPS, "72")
    assert check.reasons == reasons and check.ok == (not reasons) and len(check.details) == len(reasons)


def test_validator_words_letters_and_limits():
    assert check_guidance("1. Take twelve eggs from the 3 boxes.", "Three boxes hold a dozen eggs each.", "36").ok
    assert check_guidance(PLAN, CLIPS, "72", max_words=20).reason == "too_long"
    options = {"A": "aspirin", "B": "heparin"}
    assert check_guidance("1. Compare option A with option B by their mechanism.", "Which drug?", "B", kind="choice",
                          options=options).ok
    assert check_guidance("Weigh both; the answer is (B).", "Which drug?", "B", kind="choice",
                          options=options).reason == "states_answer"
    assert check_guidance(r"Use the formula, then simplify to \frac{3}{4}.", "Simplify 6/8.", r"\frac{3}{4}",
                          kind="expression").reason == "states_answer"


def test_validator_as_a_dspy_metric():
    metric = guidance_metric("numeric")
    example = dspy.Example(question=CLIPS, answer="72").with_inputs("question")
    assert metric(example, dspy.Prediction(guidance=PLAN, answer=72.0)) == 1.0
    assert metric(example, dspy.Prediction(guidance=PLAN, answer=70.0)) == 0.0
    assert metric(example, dspy.Prediction(guidance=PLAN, answer=70.0), trace=[]) is False
    feedback = metric(example, dspy.Prediction(guidance=PLAN + " 48 / 2 = 17.", answer=72.0), pred_name="plan")
    assert feedback.score == 0.0 and "computes: 48 / 2 = 17" in feedback.feedback


def _models(guide_reply=guidance_reply(GOOD_GUIDANCE), answer=72):
    guide, guide_engine = scripted_lm(lambda system, user: guide_reply)
    solver, solver_engine = scripted_lm(lambda system, user: answer_reply(answer))
    return guide, guide_engine, solver, solver_engine


def test_two_models_each_its_own_with_tokens_per_model():
    guide, guide_engine, solver, solver_engine = _models()
    assert "solution_guidance" in NEEDS_TEACHER
    program = make_program("solution_guidance", kind="numeric", teacher=guide)
    with dspy.context(lm=solver):  # the solver comes from the context
        prediction = program(question=CLIPS)
    assert (guide_engine.calls, solver_engine.calls) == (1, 1)
    assert prediction.guidance == GOOD_GUIDANCE and prediction.answer == 72.0
    assert GOOD_GUIDANCE in solver_engine.prompts[0] and CLIPS in guide_engine.prompts[0]
    assert prediction.guide_tokens["completion_tokens"] == len(guidance_reply(GOOD_GUIDANCE)) // 4
    assert prediction.solver_tokens["prompt_tokens"] == len(solver_engine.prompts[0]) // 4
    with pytest.raises(ValueError, match="needs a teacher"):
        make_program("solution_guidance", kind="numeric")


def test_a_guide_reply_without_field_markers_is_still_the_guidance():
    guide, _, solver, solver_engine = _models(guide_reply=PLAN)  # no [[ ## guidance ## ]] header
    prediction = SolutionGuidanceQA("numeric", guide=guide, solver=solver)(question=CLIPS)
    assert prediction.guidance == PLAN and PLAN in solver_engine.prompts[0]


SOLVING = PLAN + "\nStep 1: In May she sold 48 / 2 = 24 clips.\nStep 2: Altogether 48 + 24 = 72."


def test_readable_solution_drops_calculator_annotations_and_the_answer_line():
    gsm8k = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nShe sold 48+24 = <<48+24=72>>72 in all.\n#### 72"
    assert readable_solution(gsm8k) == "Natalia sold 48/2 = 24 clips in May.\nShe sold 48+24 = 72 in all."
    assert readable_solution("Factor: $(x-1)^2$, so $\\boxed{1}$.") == "Factor: $(x-1)^2$, so $\\boxed{1}$."
    assert readable_solution(None) == ""


# Written by the 1.5B teacher in a real SG data run (benchmarks/results/sg.md), cut where it turns to solving.
GNOMES = ("There are 5 houses on a street, and each of the first four houses has 3 gnomes in the garden. If there "
          "are a total of 20 gnomes on the street, how many gnomes does the fifth house have?")
GNOMES_WRITTEN = ("To find out how many gnomes the fifth house has, we need to follow these steps:\n\n"
                  "1. Determine the total number of gnomes in the first four houses.\n"
                  "2. Subtract this total from the overall number of gnomes on the street.\n\n"
                  "Let's start with the first step:\n\n"
                  "1. Each of the first four houses has 3 gnomes. So, the total number of gnomes is:")
RESTARTED = PLAN + "\n\n1. Find the May clips as half of the April clips: that is half of 48."


def test_plan_only_stops_where_the_guide_turns_to_solving():
    plan = plan_only(GNOMES_WRITTEN, GNOMES)
    assert plan.endswith("overall number of gnomes on the street.") and "Let's" not in plan
    assert plan_only(RESTARTED, CLIPS) == PLAN.strip()  # the steps numbered again from 1: solving them
    lead_in = "Let's plan this.\n" + PLAN
    assert plan_only(lead_in, CLIPS) == lead_in  # before any step, a lead-in is part of the plan


def test_plan_only_keeps_the_plan_written_before_the_computing():
    assert plan_only(SOLVING, CLIPS) == PLAN.strip()
    assert plan_only("In all she sold 72 clips.\n" + PLAN, CLIPS) == PLAN.strip()  # a worked note before the plan
    assert plan_only(PLAN + "\nSo she sold 72 clips.\n3. Check the total.", CLIPS) == PLAN.strip()  # after it: stop
    assert plan_only(PLAN, CLIPS) == PLAN.strip() and check_guidance(plan_only(SOLVING, CLIPS), CLIPS, "72").ok
    assert not check_guidance(SOLVING, CLIPS, "72").ok


# Written by the 1.5B teacher in a real SG data run (2026-12-02): each step carried out as it is named.
PIZZA = ("Albert buys 2 large pizzas and 2 small pizzas. A large pizza has 16 slices and a small pizza has 8 slices. "
         "If he eats it all, how many pieces does he eat that day?")
PIZZA_WRITTEN = ("The steps to solve this are:\n"
                 "1. Calculate the total slices from the large pizzas: 2 large pizzas x 16 slices per large pizza = 32 slices\n"
                 "2. Calculate the total slices from the small pizzas: 2 small pizzas x 8 slices = 16 slices\n"
                 "3. Add the slices from both kinds together: 32 slices + 16 slices = 48 slices\n"
                 "So, Albert eats 48 pieces of pizza in one day.")


def test_plan_only_cuts_each_step_before_its_computation():
    plan = plan_only(PIZZA_WRITTEN, PIZZA)
    assert plan.splitlines()[1:] == ["1. Calculate the total slices from the large pizzas.",
                                     "2. Calculate the total slices from the small pizzas.",
                                     "3. Add the slices from both kinds together."]
    assert check_guidance(plan, PIZZA, "48").ok and not check_guidance(PIZZA_WRITTEN, PIZZA, "48").ok
    # a clause that only names given quantities stays; the clause that computes goes
    halving = ("1. Find the May clips: she sold half as many as in April, so divide the April clips by 2. "
               "That is 48 / 2 = 24.")
    assert plan_only(halving, CLIPS) == "1. Find the May clips: she sold half as many as in April, so divide the April clips by 2."
    given = "Given:\n- April clips = 48\n- May clips = 48 / 2 = 24\n" + PLAN
    assert plan_only(given, CLIPS) == "Given:\n- April clips = 48\n" + PLAN.strip()
    assert plan_only("1. Add: 48 + 24 = 72.", CLIPS) == ""  # nothing of the step is left but its verb


def test_the_solver_gets_the_plan_and_the_prediction_keeps_what_was_written():
    guide, _, solver, solver_engine = _models(guide_reply=guidance_reply(SOLVING))
    prediction = SolutionGuidanceQA("numeric", guide=guide, solver=solver)(question=CLIPS)
    assert prediction.guidance == PLAN.strip() and prediction.written_guidance == SOLVING
    assert PLAN.strip() in solver_engine.prompts[0] and "48 / 2" not in solver_engine.prompts[0]


def test_save_and_load_under_other_models(tmp_path):
    guide, _, solver, _ = _models(answer="A")
    program = SolutionGuidanceQA("choice", guide=guide, solver=solver)
    program.plan.signature = program.plan.signature.with_instructions("Plan carefully.")
    program.solve.predict.demos = [dspy.Example(question="q", options="A. x", guidance="g", reasoning="r", answer="A")]
    path = save_program(program, tmp_path / "sg.json")
    state = json.loads(path.read_text())
    assert state["plan"]["lm"] is None and state["solve.predict"]["lm"] is None

    other_guide, other_guide_engine, other_solver, other_solver_engine = _models(answer="B")
    loaded = SolutionGuidanceQA("choice", guide=other_guide, solver=other_solver)
    loaded.load(str(path))
    assert loaded.plan.lm is other_guide and loaded.solve.predict.lm is other_solver
    assert loaded.plan.signature.instructions == "Plan carefully." and len(loaded.solve.predict.demos) == 1
    loaded(question="Which drug?", options={"A": "aspirin", "B": "heparin"})
    assert (other_guide_engine.calls, other_solver_engine.calls) == (1, 1)
