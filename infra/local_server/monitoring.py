"""TF Serving's monitoring: the ``--monitoring_config_file`` and its Prometheus metrics.

The file is a text-format ``MonitoringConfig`` (tensorflow_serving/config/monitoring_config.proto):
``prometheus_config { enable: true path: "/monitoring/prometheus/metrics" }``. A file that does
not parse stops the start, as it stops TF Serving (server.cc); an empty ``path`` means the default
path (http_server.cc ``PrometheusExporter::kPrometheusPath``).

The metrics are TF Serving's own, with its names, label names and buckets:
- ``/tensorflow/serving/request_count`` {model_name, status} (servables/tensorflow/util.cc): every
  Predict over gRPC (prediction_service_impl.cc) and every call of the REST API, status and
  metadata calls included (http_server.cc), with the status code name (``OK``, ``NOT_FOUND``...);
- ``/tensorflow/serving/request_latency`` {model_name, API, entrypoint}: wall time in
  microseconds of the *successful* ones only, as TF Serving records it (API ``Predict`` and
  entrypoint ``GRPC``; on REST the path's method, ``predict``, or empty for a status call, and
  entrypoint ``REST``);
- ``/tensorflow/serving/model_warmup_latency`` and ``model_warmup_records_read`` {model_path,
  status} (saved_model_warmup_util.cc) for each version loaded with a warm-up file.

util/prometheus_exporter.cc names them ``:tensorflow:serving:request_count`` and so on (every
character outside ``[a-zA-Z0-9_]`` becomes ``:``), writes a histogram's buckets as TF Serving's
``Buckets::Exponential(10, 1.8, 33)`` limits (``le="10"``, ``le="18"``, ... ``le="+Inf"``), and a
counter's samples without a ``_total`` suffix. prometheus_client's text format always adds
``_total`` to a counter's samples, so counters are exposed untyped here: the samples, what
queries and dashboards read, are named exactly as TF Serving names them.
"""

from __future__ import annotations

import bisect
import functools
import re
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from google.protobuf import text_format
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import HistogramMetricFamily, Metric, UnknownMetricFamily

DEFAULT_PROMETHEUS_PATH = "/monitoring/prometheus/metrics"  # PrometheusExporter::kPrometheusPath
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DEFAULT_MONITORING_CONFIG = f"""\
# TF Serving MonitoringConfig (text format), read at start-up through --monitoring_config_file
# (the compose stack's is infra/stack/tfserving/monitoring.config).
prometheus_config {{
  enable: true
  path: "{DEFAULT_PROMETHEUS_PATH}"
}}
"""


def _exponential_buckets(scale: float, growth: float, count: int) -> tuple[float, ...]:
    """tensorflow/core/lib/monitoring/sampler.cc ExponentialBuckets (multiplied up, not powered)."""
    limits, bound = [], scale
    for _ in range(count):
        limits.append(bound)
        bound *= growth
    return tuple(limits)


# Scale of 10, power of 1.8 with bucket count 33 (~20 minutes), in microseconds.
LATENCY_BUCKETS_US = _exponential_buckets(10, 1.8, 33)


def prometheus_name(name: str) -> str:
    """prometheus_exporter.cc GetPrometheusMetricName: /tensorflow/serving/x -> :tensorflow:serving:x."""
    name = re.sub(r"[^a-zA-Z0-9_]", ":", name)
    return f"_{name}" if name[:1].isdigit() else name


# -- the config file -------------------------------------------------------------------------------


@functools.cache
def _monitoring_config_class() -> type:
    """``MonitoringConfig``: from the tensorflow-serving-api wheel if it ships it (it does not
    today), else built from monitoring_config.proto's two messages, so the file is read by
    protobuf's own text-format parser either way."""
    try:
        from tensorflow_serving.config import monitoring_config_pb2
    except ImportError:
        pass
    else:
        return monitoring_config_pb2.MonitoringConfig
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    field = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(
        name="tensorflow_serving/config/monitoring_config.proto", package="tensorflow.serving", syntax="proto3"
    )
    prometheus = proto.message_type.add(name="PrometheusConfig")
    prometheus.field.add(name="enable", number=1, type=field.TYPE_BOOL, label=field.LABEL_OPTIONAL)
    prometheus.field.add(name="path", number=2, type=field.TYPE_STRING, label=field.LABEL_OPTIONAL)
    monitoring = proto.message_type.add(name="MonitoringConfig")
    monitoring.field.add(
        name="prometheus_config",
        number=1,
        type=field.TYPE_MESSAGE,
        type_name=".tensorflow.serving.PrometheusConfig",
        label=field.LABEL_OPTIONAL,
    )
    pool = descriptor_pool.DescriptorPool()  # a pool of its own: never clashes with a real one
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.serving.MonitoringConfig"))


def read_monitoring_config(path: Path) -> str | None:
    """The path Prometheus metrics are served on, or None when the file does not enable them.

    Raises ValueError for a file that cannot be read or is not a valid MonitoringConfig.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read the monitoring config {path}: {exc}") from exc
    try:
        config = text_format.Parse(text, _monitoring_config_class()())
    except text_format.ParseError as exc:
        raise ValueError(f"{path} is not a valid TF Serving MonitoringConfig: {exc}") from exc
    prometheus = config.prometheus_config
    if not prometheus.enable:
        return None
    if prometheus.path and not prometheus.path.startswith("/"):
        raise ValueError(f"{path}: prometheus_config.path must start with '/', got {prometheus.path!r}")
    return prometheus.path or DEFAULT_PROMETHEUS_PATH


# -- the metrics -----------------------------------------------------------------------------------


class _Counter:
    """monitoring::Counter<N>: an integer per label-value tuple."""

    def __init__(self, name: str, description: str, *labels: str) -> None:
        self.name, self.description, self.labels = prometheus_name(name), description, labels
        self._values: dict[tuple[str, ...], int] = {}
        self._lock = threading.Lock()

    def increment_by(self, label_values: Sequence[str], amount: int = 1) -> None:
        key = tuple(label_values)
        with self._lock:
            self._values[key] = self._values.get(key, 0) + amount

    def family(self) -> Metric:
        family = UnknownMetricFamily(self.name, self.description, labels=self.labels)
        with self._lock:
            for key, value in sorted(self._values.items()):
                family.add_metric(key, value)
        return family


class _Sampler:
    """monitoring::Sampler<N>: a histogram per label-value tuple; bucket i holds the values below
    limit i (and from limit i-1 on), the last one everything from the last limit up."""

    def __init__(self, name: str, description: str, *labels: str, limits: Sequence[float]) -> None:
        self.name, self.description, self.labels = prometheus_name(name), description, labels
        self._limits = tuple(limits)
        self._cells: dict[tuple[str, ...], tuple[list[int], list[float]]] = {}  # buckets, [sum]
        self._lock = threading.Lock()

    def add(self, label_values: Sequence[str], value: float) -> None:
        key = tuple(label_values)
        with self._lock:
            buckets, total = self._cells.setdefault(key, ([0] * (len(self._limits) + 1), [0.0]))
            buckets[bisect.bisect_right(self._limits, value)] += 1
            total[0] += value

    def family(self) -> Metric:
        family = HistogramMetricFamily(self.name, self.description, labels=self.labels)
        # absl::StrCat(double) writes six significant digits, like %g.
        bounds = [f"{limit:.6g}" for limit in self._limits] + ["+Inf"]
        with self._lock:
            for key, (buckets, total) in sorted(self._cells.items()):
                cumulative, running = [], 0
                for bound, count in zip(bounds, buckets):
                    running += count
                    cumulative.append((bound, running))
                family.add_metric(key, cumulative, total[0])
        return family


class ServingMetrics:
    """TF Serving's request and warm-up metrics of one server, in a registry of its own (several
    servers in one process never share counts)."""

    def __init__(self) -> None:
        self.request_count = _Counter(
            "/tensorflow/serving/request_count", "The total number of requests.", "model_name", "status"
        )
        self.request_latency = _Sampler(
            "/tensorflow/serving/request_latency",
            "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
            "model_name",
            "API",
            "entrypoint",
            limits=LATENCY_BUCKETS_US,
        )
        self.warmup_latency = _Sampler(
            "/tensorflow/serving/model_warmup_latency",
            "Distribution of wall time (in microseconds) for warming up the model.",
            "model_path",
            "status",
            limits=LATENCY_BUCKETS_US,
        )
        self.warmup_records_read = _Counter(
            "/tensorflow/serving/model_warmup_records_read",
            "Total number of warmup records read during model warmup.",
            "model_path",
            "status",
        )
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def record_request(self, model_name: str, status: str, *, api: str, entrypoint: str, latency_us: int) -> None:
        """One request (http_server.cc / prediction_service_impl.cc): counted with its status
        code name; its latency observed only when it succeeded."""
        if status == "OK":
            self.request_latency.add((model_name, api, entrypoint), latency_us)
        self.request_count.increment_by((model_name, status))

    def record_warmup(self, model_path: str, status: str, latency_us: int, records: int) -> None:
        """One warm-up replay; ``status`` as tensorflow::Status::ToString (``OK``, ``CODE: message``)."""
        self.warmup_latency.add((model_path, status), latency_us)
        self.warmup_records_read.increment_by((model_path, status), records)

    def collect(self) -> Iterator[Metric]:
        for metric in (self.request_count, self.request_latency, self.warmup_latency, self.warmup_records_read):
            yield metric.family()

    def exposition(self) -> bytes:
        """The Prometheus text format (version 0.0.4) TF Serving's metrics path answers with."""
        return generate_latest(self.registry)
