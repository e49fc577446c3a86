"""Prometheus metrics of one server, vLLM's names under the ``sarathi:`` prefix, or under
vLLM's own (``--metrics-prefix vllm``) for dashboards written for vLLM.

Each app gets its own ``CollectorRegistry`` (never prometheus' global one), so several
servers or test apps in one process do not collide.

Two sources feed it:
- histograms are observed on the engine loop thread (the ``StepObserver`` protocol of
  ``AsyncEngine``): per step (``on_step``, ``on_outputs``: the latencies between tokens),
  and once per request, as the engine takes it (``on_add``) and when it finishes or is
  aborted, so the per-step cost stays small;
- gauges and token counters are read at scrape time from the engine's published snapshot,
  so the HTTP side never touches the (non-thread-safe) engine itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from sarathi.engine.stats import EngineSnapshot
from sarathi.outputs import RequestOutput
from sarathi.sampling_params import SamplingParams

# The names' prefixes --metrics-prefix offers, the default first.
METRICS_PREFIXES = ("sarathi", "vllm")

_TTFT_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
    160.0,
    640.0,
    2560.0,
)
_ITL_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.4,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
)
_E2E_BUCKETS = (
    0.3,
    0.5,
    0.8,
    1.0,
    1.5,
    2.0,
    2.5,
    5.0,
    10.0,
    15.0,
    20.0,
    30.0,
    40.0,
    50.0,
    60.0,
    120.0,
    240.0,
    480.0,
    960.0,
    1920.0,
    7680.0,
)
# Every finish reason a request can end with, each shown from the start ("error": an
# output constraint failed mid-way), so an alert on a reason's rate has a series to read.
FINISH_REASONS = ("stop", "length", "abort", "error")
# Tokens one step runs through the model (its batch, in tokens).
_STEP_TOKEN_BUCKETS = tuple(2**i for i in range(16))  # 1 .. 32768
# The parallel-sampling counts (n) a request's choices are put in.
_N_BUCKETS = (1, 2, 4, 8, 16, 32)


def token_buckets(max_model_len: int) -> tuple[int, ...]:
    """Bucket bounds for a count of tokens: 1, 2, 5, 10, 20, 50, ... up to the context."""
    bounds: list[int] = []
    scale = 1
    while True:
        for m in (1, 2, 5):
            if m * scale > max_model_len:
                return tuple(bounds)
            bounds.append(m * scale)
        scale *= 10


# Why a request was refused at once (503): --max-waiting-requests reached, or the request
# bodies held reached --max-body-bytes-in-flight.
REJECT_REASONS = ("overloaded", "body_bytes_in_flight")


class ServerMetrics:
    """All metrics of one server; ``render()`` gives the Prometheus text format."""

    content_type = "text/plain; version=0.0.4; charset=utf-8"

    def __init__(
        self,
        model_name: str,
        snapshot: Callable[[], EngineSnapshot],
        prefix: str = METRICS_PREFIXES[0],
        max_model_len: int = 8192,
        cache_info: dict[str, str] | None = None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.model_name = model_name
        self.prefix = prefix + ":"
        labels = ["model_name"]

        def histogram(name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(
                self.prefix + name, doc, labels, buckets=buckets, registry=self.registry
            )

        self.ttft = histogram(
            "time_to_first_token_seconds",
            "Time from arrival to the first generated token.",
            _TTFT_BUCKETS,
        )
        self.itl = histogram(
            "inter_token_latency_seconds",
            "Time between two consecutive steps that produced tokens for a request.",
            _ITL_BUCKETS,
        )
        self.e2e = histogram(
            "e2e_request_latency_seconds",
            "Time from arrival to the last token of a finished request.",
            _E2E_BUCKETS,
        )
        self.tpot = histogram(
            "time_per_output_token_seconds",
            "A finished request's time per output token after its first (vLLM's TPOT).",
            _ITL_BUCKETS,
        )
        self.queue = histogram(
            "request_queue_time_seconds",
            "Time from arrival to first being scheduled.",
            _TTFT_BUCKETS,
        )
        # Per finished request (observed once, when it ends; a request aborted before it
        # finishes is in none of them): its token counts, its n, and the phases of its time.
        model = (model_name,)
        tokens = token_buckets(max_model_len)
        self.req_prompt_tokens = histogram(
            "request_prompt_tokens", "A finished request's prompt tokens.", tokens
        ).labels(*model)
        self.req_generation_tokens = histogram(
            "request_generation_tokens",
            "A finished request's generated tokens, all its choices together.",
            tokens,
        ).labels(*model)
        self.req_max_generation_tokens = histogram(
            "request_max_num_generation_tokens",
            "A finished request's generated tokens in its longest choice.",
            tokens,
        ).labels(*model)
        self.req_n = histogram(
            "request_params_n", "A finished request's n (choices).", _N_BUCKETS
        ).labels(*model)
        self.req_prefill = histogram(
            "request_prefill_time_seconds",
            "A finished request's time from first being scheduled to its first token.",
            _E2E_BUCKETS,
        ).labels(*model)
        self.req_decode = histogram(
            "request_decode_time_seconds",
            "A finished request's time from its first token to its last.",
            _E2E_BUCKETS,
        ).labels(*model)
        self.req_inference = histogram(
            "request_inference_time_seconds",
            "A finished request's time from first being scheduled to its last token "
            "(prefill and decode).",
            _E2E_BUCKETS,
        ).labels(*model)
        # Observed when the engine takes a request (the server always sets max_tokens:
        # what the request asked for, or the room its context leaves).
        self.req_max_tokens = histogram(
            "request_params_max_tokens", "A request's max_tokens.", tokens
        ).labels(*model)
        self.step_tokens = histogram(
            "iteration_tokens_total",
            "Tokens one engine step ran through the model: prompt chunks and decodes.",
            _STEP_TOKEN_BUCKETS,
        ).labels(*model)
        if cache_info:
            # An info series (always 1) whose labels describe the KV cache; load balancers
            # read vLLM's to learn a replica's capacity (num_gpu_blocks * block_size tokens).
            info = Gauge(
                self.prefix + "cache_config_info",
                "The KV cache's configuration, in the labels.",
                ["model_name", *cache_info],
                registry=self.registry,
            )
            info.labels(model_name, *cache_info.values()).set(1)
        self.rejected = Counter(
            self.prefix + "num_requests_rejected",
            "Requests refused at once (503) because the server was overloaded.",
            ["model_name", "reason"],
            registry=self.registry,
        )
        # Each reason shown at 0 from the start: a labelled counter has no series until its
        # labels are first used, and an alert on its rate would read nothing.
        for reason in REJECT_REASONS:
            self.rejected.labels(model_name, reason)
        self._success = {r: 0 for r in FINISH_REASONS}
        # Per-request time of the last step that produced tokens; loop-thread only.
        self._last_token: dict[str, float] = {}
        self.registry.register(_SnapshotCollector(self, snapshot))

    def count_rejected(self, reason: str) -> None:
        """One request refused at once (503), for one of ``REJECT_REASONS``."""
        if reason not in REJECT_REASONS:
            raise ValueError(f"unknown rejection reason {reason!r}")
        self.rejected.labels(self.model_name, reason).inc()

    # -- StepObserver (called on the engine loop thread) ------------------------------------

    def on_add(self, params: SamplingParams) -> None:
        if params.max_tokens is not None:
            self.req_max_tokens.observe(params.max_tokens)

    def on_step(self, num_tokens: int) -> None:
        self.step_tokens.observe(num_tokens)

    def on_outputs(self, outputs: list[RequestOutput], now: float) -> None:
        labels = self.ttft.labels(self.model_name)
        for out in outputs:
            if not any(c.num_new_tokens for c in out.outputs):
                continue
            prev = self._last_token.get(out.request_id)
            m = out.metrics
            if prev is None:
                if m is not None:
                    labels.observe(now - m.arrival_time)
                    if m.first_scheduled_time is not None:
                        self.queue.labels(self.model_name).observe(
                            m.first_scheduled_time - m.arrival_time
                        )
            else:
                self.itl.labels(self.model_name).observe(now - prev)
            self._last_token[out.request_id] = now
            if out.finished:
                self._last_token.pop(out.request_id, None)
                self._observe_finished(out, now)

    def _observe_finished(self, out: RequestOutput, now: float) -> None:
        """The once-per-request observations of a request that just finished (its choices'
        token counts are whole on a delta output too)."""
        m = out.metrics
        lengths = [c.num_output_tokens for c in out.outputs]
        longest = max(lengths, default=0)
        if m is not None:
            self.e2e.labels(self.model_name).observe(now - m.arrival_time)
            if longest > 1 and m.first_token_time is not None:
                self.tpot.labels(self.model_name).observe(
                    (now - m.first_token_time) / (longest - 1)
                )
            last = m.last_token_time if m.last_token_time is not None else now
            if m.first_token_time is not None:
                self.req_decode.observe(last - m.first_token_time)
                if m.first_scheduled_time is not None:
                    self.req_prefill.observe(m.first_token_time - m.first_scheduled_time)
            if m.first_scheduled_time is not None:
                self.req_inference.observe(last - m.first_scheduled_time)
        self.req_prompt_tokens.observe(len(out.prompt_token_ids))
        self.req_generation_tokens.observe(sum(lengths))
        self.req_max_generation_tokens.observe(longest)
        self.req_n.observe(len(out.outputs))
        # Once per request, as aborts are; its first choice's reason names it.
        reason = (out.outputs[0].finish_reason if out.outputs else None) or "abort"
        self._success[reason] = self._success.get(reason, 0) + 1

    def on_abort(self, request_id: str) -> None:
        self._last_token.pop(request_id, None)
        self._success["abort"] += 1

    # -- exposition ------------------------------------------------------------------------
    def render(self) -> bytes:
        return generate_latest(_WithoutCreated(self.registry))

    def adaptivocab_families(self, snap: EngineSnapshot) -> Iterable[Metric]:
        """AdaptiVocab: the reduction ratio, text capacity and tokens saved.

        Tokens saved are counted on finished requests, on the same text: the base
        tokenizer's count is the patched ids expanded into their base pieces.
        """
        labels = [self.model_name]
        ratio = GaugeMetricFamily(
            self.prefix + "adaptivocab_reduction_ratio",
            "Measured patched/base token ratio (1 without a patch tokenizer).",
            labels=["model_name"],
        )
        ratio.add_metric(labels, snap.reduction_ratio)
        yield ratio
        cap = GaugeMetricFamily(
            self.prefix + "kv_cache_text_capacity_base_tokens",
            "Longest request a KV slot holds, in base-tokenizer tokens.",
            labels=["model_name"],
        )
        cap.add_metric(labels, snap.text_capacity_base_tokens)
        yield cap
        if not snap.patched:
            return
        t = snap.stats
        for kind, base_tokens, patched_tokens in (
            ("prompt", t.base_prompt_tokens, t.patched_prompt_tokens),
            ("generation", t.base_generation_tokens, t.patched_generation_tokens),
        ):
            saved = CounterMetricFamily(
                self.prefix + f"adaptivocab_{kind}_tokens_saved",
                f"{kind.capitalize()} tokens the domain vocabulary saved versus the base "
                "tokenizer, on the same text (finished requests).",
                labels=["model_name"],
            )
            saved.add_metric(labels, base_tokens - patched_tokens)
            yield saved
            base = CounterMetricFamily(
                self.prefix + f"adaptivocab_base_{kind}_tokens",
                f"{kind.capitalize()} tokens the base tokenizer would have used (finished "
                "requests).",
                labels=["model_name"],
            )
            base.add_metric(labels, base_tokens)
            yield base


class _SnapshotCollector:
    """Gauges and counters read from the engine snapshot at scrape time."""

    def __init__(self, metrics: ServerMetrics, snapshot: Callable[[], EngineSnapshot]) -> None:
        self.metrics = metrics
        self.snapshot = snapshot

    def collect(self) -> Iterable[Metric]:
        snap = self.snapshot()
        name = self.metrics.model_name

        def gauge(metric: str, doc: str, value: float) -> GaugeMetricFamily:
            g = GaugeMetricFamily(self.metrics.prefix + metric, doc, labels=["model_name"])
            g.add_metric([name], value)
            return g

        def counter(metric: str, doc: str, value: float) -> CounterMetricFamily:
            c = CounterMetricFamily(self.metrics.prefix + metric, doc, labels=["model_name"])
            c.add_metric([name], value)
            return c

        yield gauge("num_requests_running", "Sequences running on the engine.", snap.num_running)
        yield gauge("num_requests_waiting", "Sequences waiting to be scheduled.", snap.num_waiting)
        yield counter("prompt_tokens", "Prompt tokens admitted.", snap.stats.prompt_tokens)
        yield counter("generation_tokens", "Tokens generated.", snap.stats.generation_tokens)
        yield counter(
            "num_preemptions", "Sequences preempted (to be recomputed).", snap.stats.preemptions
        )
        yield counter(
            "prefix_cache_queries",
            "Prompt tokens looked up in the prefix cache at admission.",
            snap.stats.prefix_cache_queries,
        )
        yield counter(
            "prefix_cache_hits",
            "Prompt tokens found in the prefix cache (mapped, not prefilled).",
            snap.stats.prefix_cache_hits,
        )
        yield counter(
            "prefix_cache_evictions",
            "KV blocks dropped from the prefix cache: to make room, by a reset, or with "
            "the block they were chained after.",
            snap.stats.prefix_cache_evictions,
        )
        yield gauge(
            "prefix_cache_blocks",
            "KV blocks in the prefix cache, in use or evictable.",
            snap.prefix_cached_blocks,
        )
        success = CounterMetricFamily(
            self.metrics.prefix + "request_success",
            "Finished requests, by finish reason (of the first choice where n > 1).",
            labels=["model_name", "finished_reason"],
        )
        for reason, count in sorted(dict(self.metrics._success).items()):  # copy: atomic
            success.add_metric([name, reason], count)
        yield success
        cache = snap.cache
        yield gauge(
            "kv_cache_mapped_bytes",
            "Physical KV cache memory mapped.",
            cache.get("mapped_bytes", 0),
        )
        yield gauge(
            "kv_cache_virtual_mapped_bytes",
            "KV cache memory the slots see mapped: more than kv_cache_mapped_bytes by what "
            "prefix caching shares.",
            cache.get("virtual_mapped_bytes", cache.get("mapped_bytes", 0)),
        )
        yield gauge(
            "kv_cache_used_bytes", "KV cache bytes holding tokens.", cache.get("token_bytes", 0)
        )
        yield gauge(
            "kv_cache_pages_free",
            "Physical KV pages not mapped to any slot.",
            cache.get("pages_free", 0),
        )
        total = cache.get("blocks_total", 0)
        usage = (
            (cache.get("blocks_used", 0) - snap.prefix_evictable_blocks) / total if total else 0.0
        )
        yield gauge(
            "kv_cache_usage_perc",
            "KV cache usage: the fraction of its blocks held by requests (1 = full), as "
            "gateways and autoscalers read vLLM's; cached blocks no request uses are free.",
            usage,
        )
        # vLLM's former name of the same gauge, which its example Grafana dashboard (and
        # dashboards made from it) still plot.
        yield gauge("gpu_cache_usage_perc", "The same as kv_cache_usage_perc (older name).", usage)
        yield from self.metrics.adaptivocab_families(snap)


class _WithoutCreated:
    """A registry's families without their ``_created`` samples (when each counter and
    histogram series was made), as vLLM exports them: they double the series a scraper
    stores and say nothing a dashboard reads."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterable[Metric]:
        for family in self.registry.collect():
            family.samples = [s for s in family.samples if not s.name.endswith("_created")]
            yield family
