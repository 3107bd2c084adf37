"""In-process scripted LMs: a test engine inside a real `dspy.LM`, counting every call."""

from __future__ import annotations

import json
import re
import threading

import dspy
from dspy.lm15 import Message, Response, TextPart, Usage


class ScriptedEngine:
    """A DSPy engine whose answer is `respond(system_text, user_text) -> str`.

    `fail_after` makes every call after that many successful ones raise `failure`, to test
    resume; `calls` counts requests that reached the engine.
    """

    def __init__(self, respond, fail_after: int | None = None, failure: type[Exception] = ConnectionError):
        self.respond = respond
        self.fail_after = fail_after
        self.failure = failure
        self.calls = 0
        self.prompts: list[str] = []
        self._lock = threading.Lock()

    def complete(self, request):
        system = request.system if isinstance(request.system, str) else "".join(
            p.text for p in (request.system or []))
        user = "\n".join(m.text or "" for m in request.messages)
        with self._lock:
            if self.fail_after is not None and self.calls >= self.fail_after:
                raise self.failure("scripted teacher is down")
            self.calls += 1
            self.prompts.append(user)
        text = self.respond(system, user)
        return Response(id=None, model="scripted", message=Message.assistant([TextPart(text)]),
                        finish_reason="stop", usage=Usage(input_tokens=len(user) // 4, output_tokens=len(text) // 4,
                                                          total_tokens=(len(user) + len(text)) // 4))

    def stream(self, request):
        from dspy.lm15 import response_to_events

        return response_to_events(self.complete(request))

    def close(self):
        pass


def scripted_lm(respond, **engine_options) -> tuple[dspy.LM, ScriptedEngine]:
    engine = ScriptedEngine(respond, **engine_options)
    return dspy.LM("scripted/teacher", engine=engine, cache=False, num_retries=0), engine


def guide_response(system: str, user: str) -> str:
    """A well-formed guide whose title names the first words of the first example question."""
    match = re.search(r"example_questions ## \]\]\s*(.+)", user, re.S)
    first = json.loads(match.group(1).split("\n\n[[ ##")[0])[0] if match else "questions"
    topic = " ".join(re.findall(r"[A-Za-z]+", first)[:4]) or "questions"
    guide = {"title": f"Solving problems like: {topic}", "applies_when": f"The question resembles '{topic}'.",
             "background": "Identify the quantities and how they relate.",
             "procedure": ["List the known quantities.", "Write the relation between them.",
                           "Compute step by step.", "Check units and reasonableness."],
             "pitfalls": ["Mixing up units.", "Skipping a step of the story."]}
    return f"[[ ## guide ## ]]\n{json.dumps(guide)}\n\n[[ ## completed ## ]]"
