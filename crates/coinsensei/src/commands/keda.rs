//! `coinsensei autoscaler keda`: the KEDA `ScaledObject`s that scale the worker Deployments
//! of `deploy/k8s/` on Kubernetes, made from the same `[[autoscale]]` entries that the
//! autoscaler of `coinsensei up` follows, so one policy holds on both.
//!
//! KEDA hands the work to a HorizontalPodAutoscaler, which scales in proportion (replicas =
//! ceil(depth / target)) rather than by the roadmap's fixed steps past two thresholds. The
//! policy maps onto it as closely as the HPA allows:
//! - `min_workers` / `max_workers`: `minReplicaCount` / `maxReplicaCount`;
//! - `scale_up_depth`: the per-replica target of the Prometheus trigger, so more than that
//!   many ready jobs per worker adds workers;
//! - `scale_up_step` / `scale_down_step` per `cooldown`: the HPA's scale-up and scale-down
//!   policies (at most that many pods per period), and `cooldown` as the scale-down
//!   stabilisation window (no scale-in until the depth stayed low that long);
//! - `scale_down_depth` has no HPA counterpart (the HPA scales in when the depth per worker
//!   falls under the target, less its 10 % tolerance); it is written as an annotation for
//!   the record.
//!
//! The depth is `coinsensei_queue_jobs{state="available"}` as the control plane exports it;
//! every control-plane replica reports the whole queue, so the query takes their `max`.

use std::fmt::Write as _;
use std::process::ExitCode;

use anyhow::bail;
use serde_json::{Value, json};

use crate::config::{AutoscaleEntry, Settings};

/// The longest period the HPA accepts in a scaling policy (`periodSeconds`).
const HPA_PERIOD_MAX_SECONDS: u64 = 1800;
/// How often KEDA reads the depth.
const POLLING_INTERVAL_SECONDS: u64 = 15;

/// The Deployment of `deploy/k8s/` that runs a queue's workers.
pub fn deployment_name(entry: &AutoscaleEntry) -> String {
    format!(
        "coinsensei-{}-{}",
        entry.spec.chain.as_str(),
        entry.spec.kind.as_str()
    )
}

pub fn keda(
    settings: &Settings,
    namespace: &str,
    prometheus_url: &str,
) -> anyhow::Result<ExitCode> {
    print!("{}", scaled_objects(settings, namespace, prometheus_url)?);
    Ok(ExitCode::SUCCESS)
}

/// Every `[[autoscale]]` entry's ScaledObject, as YAML documents.
pub fn scaled_objects(
    settings: &Settings,
    namespace: &str,
    prometheus_url: &str,
) -> anyhow::Result<String> {
    let label_ok = !namespace.is_empty()
        && namespace.len() <= 63
        && namespace
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-')
        && !namespace.starts_with('-')
        && !namespace.ends_with('-');
    if !label_ok {
        bail!(
            "invalid --namespace {namespace:?}: a Kubernetes namespace is 1 to 63 lowercase letters, digits and '-', starting and ending with a letter or digit"
        );
    }
    if !(prometheus_url.starts_with("http://") || prometheus_url.starts_with("https://"))
        || prometheus_url.chars().any(char::is_whitespace)
    {
        bail!(
            "invalid --prometheus-url {prometheus_url:?}: expected http://HOST:PORT or https://HOST:PORT of the Prometheus that scrapes the control plane"
        );
    }
    if settings.autoscale.is_empty() {
        bail!(
            "no [[autoscale]] entry in the configuration: add one per queue to scale (see coinsensei.example.toml)"
        );
    }
    let mut out = String::from(
        "# KEDA ScaledObjects made by `coinsensei autoscaler keda` from the configuration's\n# [[autoscale]] entries; regenerate instead of editing.\n",
    );
    for (index, entry) in settings.autoscale.iter().enumerate() {
        let cooldown = entry.policy.cooldown.as_secs();
        if cooldown == 0 || cooldown > HPA_PERIOD_MAX_SECONDS {
            bail!(
                "invalid configuration key `autoscale[{index}].cooldown`: {} s cannot be a Kubernetes scaling period; expected 1 to {HPA_PERIOD_MAX_SECONDS} s (whole seconds)",
                entry.policy.cooldown.as_secs_f64()
            );
        }
        out.push_str("---\n");
        yaml(
            &mut out,
            &scaled_object(entry, namespace, prometheus_url),
            0,
        );
    }
    Ok(out)
}

fn scaled_object(entry: &AutoscaleEntry, namespace: &str, prometheus_url: &str) -> Value {
    let policy = &entry.policy;
    let cooldown = policy.cooldown.as_secs();
    let name = deployment_name(entry);
    json!({
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {
                "app.kubernetes.io/name": "coinsensei",
                "app.kubernetes.io/component": "worker",
                "coinsensei.io/queue": entry.queue.as_str(),
            },
            "annotations": {
                "coinsensei.io/scale-down-depth": policy.scale_down_depth.to_string(),
            },
        },
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicaCount": policy.min_workers,
            "maxReplicaCount": policy.max_workers,
            "pollingInterval": POLLING_INTERVAL_SECONDS,
            "cooldownPeriod": cooldown,
            "advanced": {
                "horizontalPodAutoscalerConfig": {
                    "behavior": {
                        "scaleUp": {
                            "stabilizationWindowSeconds": 0,
                            "selectPolicy": "Min",
                            "policies": [{"type": "Pods", "value": policy.scale_up_step, "periodSeconds": cooldown}],
                        },
                        "scaleDown": {
                            "stabilizationWindowSeconds": cooldown,
                            "selectPolicy": "Min",
                            "policies": [{"type": "Pods", "value": policy.scale_down_step, "periodSeconds": cooldown}],
                        },
                    },
                },
            },
            "triggers": [{
                "type": "prometheus",
                "metricType": "AverageValue",
                "metadata": {
                    "serverAddress": prometheus_url,
                    "query": format!(
                        "max(coinsensei_queue_jobs{{queue=\"{}\",state=\"available\"}}) or vector(0)",
                        entry.queue.as_str()
                    ),
                    "threshold": policy.scale_up_depth.to_string(),
                },
            }],
        },
    })
}

/// A small YAML writer for the JSON values above: maps and lists in block style, every
/// string double-quoted (JSON's quoting is valid YAML), so no value can turn into another
/// type or break the document.
fn yaml(out: &mut String, value: &Value, indent: usize) {
    let pad = " ".repeat(indent);
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                match value {
                    Value::Object(inner) if !inner.is_empty() => {
                        let _ = writeln!(out, "{pad}{key}:");
                        yaml(out, value, indent + 2);
                    }
                    Value::Array(items) if !items.is_empty() => {
                        let _ = writeln!(out, "{pad}{key}:");
                        yaml(out, value, indent + 2);
                    }
                    _ => {
                        let _ = writeln!(out, "{pad}{key}: {}", scalar(value));
                    }
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                match item {
                    Value::Object(_) | Value::Array(_) => {
                        let mut inner = String::new();
                        yaml(&mut inner, item, indent + 2);
                        // The first line of the item goes after the dash.
                        let inner = inner.trim_start_matches(' ');
                        let _ = write!(out, "{pad}- {inner}");
                    }
                    _ => {
                        let _ = writeln!(out, "{pad}- {}", scalar(item));
                    }
                }
            }
        }
        _ => {
            let _ = writeln!(out, "{pad}{}", scalar(value));
        }
    }
}

fn scalar(value: &Value) -> String {
    match value {
        Value::Object(_) => "{}".to_string(),
        Value::Array(_) => "[]".to_string(),
        other => other.to_string(),
    }
}
