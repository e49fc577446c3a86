"""The offline API: ``LLM(model=...).generate(prompts, params)``."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from sarathi.config import EngineConfig
from sarathi.engine.llm_engine import LLMEngine, RequestError
from sarathi.outputs import RequestOutput
from sarathi.sampling_params import SamplingParams

if TYPE_CHECKING:
    from typing_extensions import TypeIs

logger = logging.getLogger("sarathi")

_BAR_THRESHOLD = 8  # show a progress bar for batches at least this large


class LLM:
    """Generate completions for a batch of prompts.

    Every keyword is an engine config field name (see ``python -m sarathi generate --help``),
    e.g. ``LLM(model="path/to/model", dtype="bfloat16", chunk_size=512, scheduler="sarathi")``.
    With no model, the embedded random-weight demo model is used.
    """

    def __init__(self, model: str = "demo", **kwargs: Any) -> None:
        self._start(EngineConfig.from_kwargs(model=model, **kwargs))

    @classmethod
    def from_config(cls, config: EngineConfig) -> LLM:
        llm = cls.__new__(cls)
        llm._start(config)
        return llm

    def _start(self, config: EngineConfig) -> None:
        self.config = config
        self.engine = LLMEngine(config)
        self._request_ids = itertools.count()

    def get_default_sampling_params(self) -> SamplingParams:
        """SamplingParams with the model's defaults (--generation-config, as vLLM)."""
        return SamplingParams(**self.engine.setup.default_sampling)

    def get_tokenizer(self) -> Any:
        return self.engine.tokenizer

    def generate(
        self,
        prompts: str | Sequence[int] | Sequence[str] | Sequence[Sequence[int]],
        sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
        use_tqdm: bool | None = None,
    ) -> list[RequestOutput]:
        """Outputs in the order of ``prompts``; strings or token-id lists are both accepted.

        A request that cannot be served (e.g. a prompt longer than the context) gets an
        output with ``error`` set and ``finish_reason="error"``; the others still run.
        """
        batch: list[str | Sequence[int]] = (
            [prompts] if isinstance(prompts, str) or _is_token_ids(prompts) else list(prompts)
        )
        if sampling_params is None:
            sampling_params = self.get_default_sampling_params()
        if isinstance(sampling_params, SamplingParams):
            params = [sampling_params] * len(batch)
        else:
            params = list(sampling_params)
            if len(params) != len(batch):
                raise ValueError(f"got {len(batch)} prompts but {len(params)} sampling params")
        engine = self.engine
        results: dict[str, RequestOutput] = {}
        order: list[str] = []
        for i, (prompt, p) in enumerate(zip(batch, params, strict=True)):
            rid = f"generate-{next(self._request_ids)}"
            order.append(rid)
            try:
                engine.add_request(prompt, p, request_id=rid, final_only=True)
            except RequestError as e:
                logger.warning("request %d failed: %s", i, e)
                results[rid] = _error_output(rid, prompt, str(e))
        show = use_tqdm if use_tqdm is not None else len(batch) >= _BAR_THRESHOLD
        bar = tqdm(total=len(order) - len(results), desc="generate", unit="req", disable=not show)
        try:
            while engine.has_unfinished_requests():
                for out in engine.step():
                    if out.finished:
                        results[out.request_id] = out
                        bar.update(1)
        except BaseException:
            for rid in order:
                engine.abort_request(rid)
            raise
        finally:
            bar.close()
        return [results[rid] for rid in order]


def _is_token_ids(
    prompts: Sequence[int] | Sequence[str] | Sequence[Sequence[int]],
) -> TypeIs[Sequence[int]]:
    """One prompt given as token ids, not a batch of prompts."""
    return bool(prompts) and isinstance(prompts[0], int)


def _error_output(rid: str, prompt: Any, message: str) -> RequestOutput:
    from sarathi.outputs import CompletionOutput

    text = prompt if isinstance(prompt, str) else None
    ids = [] if isinstance(prompt, str) else list(prompt)
    return RequestOutput(
        rid,
        text,
        ids,
        [CompletionOutput(0, "", [], finish_reason="error")],
        finished=True,
        error=message,
    )
