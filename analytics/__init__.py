"""Pure online analytics over metric series: anomaly detection and its series helpers."""

from analytics.anomaly import ALERT_THRESHOLD, MetricAnomalyDetector, Verdict

__all__ = ["ALERT_THRESHOLD", "MetricAnomalyDetector", "Verdict"]
