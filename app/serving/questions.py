"""`QuestionAsker`: which artists to ask a new listener about next (POST /v1/onboarding/questions).

Each request is checked as a recommend request with the same support and exclusions (same
refusals), answered from its own answer memo when it repeats (an empty support set included:
every new listener starts there), else by `tanp.onboarding.next_questions`. A model that scores
NaN or infinity is a `ModelFaultError` (503), counted and reported like the recommend path's.
Knows nothing about HTTP.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

from app.errors import ModelFaultError
from app.schemas import QuestionsRequest, RecommendRequest
from app.serving.model import ServingModel
from app.serving.pipeline import NamedItem, check, named, out_of_memory, scoring_fault
from app.serving.ranking import non_finite
from app.serving.recommender import AnswerMemo, memo_key
from app.telemetry import Metrics
from tanp.onboarding import NonFiniteScoresError, next_questions

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Questions:
    items: tuple[NamedItem, ...]
    model_version: str
    cached: bool  # answered from the memo


class QuestionAsker:
    """The onboarding questions of one app: its answer memo, MAX_SUPPORT and fault reports."""

    def __init__(
        self,
        *,
        answers: AnswerMemo[tuple[NamedItem, ...]] | None,
        metrics: Metrics,
        max_support: int,
        on_model_fault: Callable[[ModelFaultError], None] | None = None,
    ) -> None:
        self.answers = answers
        self.metrics = metrics
        self.max_support = max_support
        self.on_model_fault = on_model_fault

    def ask(self, *, model: ServingModel, request: QuestionsRequest, request_id: str) -> Questions:
        """The k items to ask about next on `model`, blocking; raises the request's refusal
        (`app.serving.pipeline.check`) or the model's fault."""
        started = time.perf_counter()
        checked = check(
            model,
            RecommendRequest.model_construct(
                support=request.support,
                k=request.k,
                exclude=request.exclude,
                candidates=None,
                uncertainty_samples=0,
            ),
            max_support=self.max_support,
        )
        key = memo_key(weights_sha256=model.weights_sha256, checked=checked)
        remembered = self.answers.get(key) if self.answers is not None else None
        if remembered is not None:
            return Questions(remembered, model.version, cached=True)
        try:
            chosen = next_questions(
                model.scorer,
                support_items=checked.support,
                support_labels=checked.labels,
                k=request.k,
                exclude=checked.excluded.tolist(),
            )
        except NonFiniteScoresError:
            self._fault(non_finite(model), request_id)
        except (RuntimeError, IndexError) as error:
            if out_of_memory(error):
                raise
            self._fault(scoring_fault(model, error), request_id)
        items = named(model, chosen)
        if self.answers is not None:
            self.answers.put(key, items)
        self.metrics.inference_latency.labels(path="questions").observe(
            time.perf_counter() - started
        )
        return Questions(items, model.version, cached=False)

    def _fault(self, fault: ModelFaultError, request_id: str) -> NoReturn:
        self.metrics.model_faults.labels(version=fault.version, reason=fault.kind).inc()
        logger.error("request %s: %s", request_id, fault.detail)
        if self.on_model_fault is not None:
            self.on_model_fault(fault)
        raise fault
