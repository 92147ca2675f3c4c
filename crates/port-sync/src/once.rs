//! `--once`: one round — read the JobManager, read the Service, patch if needed — and a report
//! of what it saw and did. The standalone debugging tool.

use crate::flink::{JobManagerError, PortSource};
use crate::plan::{describe_ports, in_sync, plan, show_target};
use crate::ports::{DesiredPorts, PortMapping};
use crate::service::{FailureKind, ServiceHandle};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{Value, json};

/// A round may meet a concurrent change (the patch's `test` fails); re-read and re-plan this
/// many times before calling it "not in sync".
const ATTEMPTS: usize = 3;

/// What one round saw and did, and its exit code.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub lines: Vec<String>,
    pub jobmanager: Option<Value>,
    pub service: Option<Value>,
    pub patch: Option<Value>,
    pub action: &'static str,
    pub error: Option<String>,
    pub exit_code: u8,
}

impl Report {
    pub fn to_text(&self) -> String {
        let mut out = self.lines.join("\n");
        if !out.is_empty() {
            out.push('\n');
        }
        out
    }

    pub fn to_json(&self) -> String {
        json!({
            "jobmanager": self.jobmanager,
            "service": self.service,
            "patch": self.patch,
            "action": self.action,
            "in_sync": self.exit_code == 0,
            "error": self.error,
            "exit_code": self.exit_code,
        })
        .to_string()
    }

    fn finish(mut self, action: &'static str, exit_code: u8, error: Option<String>) -> Self {
        if let Some(error) = &error {
            self.lines.push(format!("error: {error}"));
        }
        self.lines.push(match exit_code {
            0 => "in sync".to_owned(),
            _ => format!("not in sync (exit {exit_code})"),
        });
        self.action = action;
        self.exit_code = exit_code;
        self.error = error;
        self
    }
}

/// The JobManager's ports for `--log-format json`: `{"rpc": {"port": 46911, "targetPort": 33221}}`.
fn desired_json(desired: &DesiredPorts) -> Value {
    Value::Object(
        desired
            .pairs()
            .map(|(name, pair)| {
                let ports = json!({"port": pair.port, "targetPort": pair.target_port});
                (name.to_owned(), ports)
            })
            .collect(),
    )
}

/// The Service's ports for `--log-format json`, each value typed as the API server holds it:
/// a numeric targetPort is a number, a named one a string, an absent one null.
fn service_ports_json(ports: &[(String, i32, Option<IntOrString>)]) -> Value {
    ports
        .iter()
        .map(|(name, port, target)| {
            let target = match target {
                Some(IntOrString::Int(number)) => json!(number),
                Some(IntOrString::String(named)) => json!(named),
                None => Value::Null,
            };
            json!({"name": name, "port": port, "targetPort": target})
        })
        .collect()
}

pub async fn once(
    jobmanager: &impl PortSource,
    service: &ServiceHandle,
    mappings: &[PortMapping],
    dry_run: bool,
) -> Report {
    let mut report = Report::default();
    let desired = match jobmanager.desired_ports(mappings).await {
        Ok(desired) => desired,
        Err(problem) => {
            // A JobManager that answers without valid ports is bad input (2); one that does
            // not answer may just not be up yet (1).
            let code = match problem {
                JobManagerError::Config(_) => 2,
                JobManagerError::Fetch(_) => 1,
            };
            return report.finish("none", code, Some(problem.to_string()));
        }
    };
    report
        .lines
        .push(format!("JobManager {}: {desired}", jobmanager.config_url()));
    report.jobmanager = Some(desired_json(&desired));

    for attempt in 1..=ATTEMPTS {
        let current = match service.get().await {
            Ok(current) => current,
            Err(failure) => return report.finish("none", 1, Some(failure.message)),
        };
        let ports = describe_ports(&current);
        report.lines.push(format!(
            "Service {} (resourceVersion {}): {}",
            service.display_name(),
            current.metadata.resource_version.as_deref().unwrap_or("?"),
            ports
                .iter()
                .map(|(name, port, target)| format!(
                    "{name} port {port} targetPort {}",
                    show_target(target.as_ref())
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        report.service = Some(service_ports_json(&ports));
        let plan = match plan(&current, &desired) {
            Ok(None) => return report.finish("none", 0, None),
            Ok(Some(plan)) => plan,
            Err(problem) => return report.finish("none", 2, Some(problem.to_string())),
        };
        let patch = plan.patch_json();
        report.patch = Some(patch.clone());
        if dry_run {
            report
                .lines
                .push("dry run: would send this JSON Patch:".into());
            report
                .lines
                .push(serde_json::to_string_pretty(&patch).unwrap_or_default());
            for change in &plan.changes {
                report.lines.push(format!("would change {change}"));
            }
            return report.finish("dry-run", 1, None);
        }
        match service.patch(&plan.patch).await {
            Ok(patched) => {
                for change in &plan.changes {
                    report.lines.push(format!("patched {change}"));
                }
                let code = if in_sync(&patched, &desired) { 0 } else { 1 };
                return report.finish("patched", code, None);
            }
            Err(failure) if failure.kind == FailureKind::Conflict && attempt < ATTEMPTS => {
                report
                    .lines
                    .push(format!("{}; reading again", failure.message));
            }
            Err(failure) => return report.finish("patch-failed", 1, Some(failure.message)),
        }
    }
    unreachable!("the last attempt returns")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::PortPair;

    #[test]
    fn service_ports_are_typed_in_json() {
        let ports = [
            (
                "rpc".to_owned(),
                6123,
                Some(IntOrString::String("rpc".into())),
            ),
            ("blob".to_owned(), 6124, Some(IntOrString::Int(6124))),
            ("rest".to_owned(), 8081, None),
        ];
        assert_eq!(
            service_ports_json(&ports).to_string(),
            r#"[{"name":"rpc","port":6123,"targetPort":"rpc"},{"name":"blob","port":6124,"targetPort":6124},{"name":"rest","port":8081,"targetPort":null}]"#
        );
    }

    /// `--once --log-format json` as a whole, from a real round against the in-process API.
    #[tokio::test(start_paused = true)]
    async fn once_in_json_gives_ports_as_numbers_strings_or_null() {
        use crate::mock_api::{MockApi, MockJobManager, chart_service};
        let mut service = chart_service();
        service["spec"]["ports"][1]["targetPort"] = json!("rpc");
        service["spec"]["ports"][2]
            .as_object_mut()
            .unwrap()
            .remove("targetPort");
        let api = MockApi::new(service);
        let jobmanager = MockJobManager::silent();
        jobmanager.answer(DesiredPorts::from([("rpc", 41001), ("blob", 42001)]));
        let mappings = [
            PortMapping::new("rpc", "jobmanager.rpc.port"),
            PortMapping::new("blob", "blob.server.port"),
        ];
        let report = once(&jobmanager, &api.handle(), &mappings, true).await;
        let printed: Value = serde_json::from_str(&report.to_json()).unwrap();
        assert_eq!(
            printed["service"],
            json!([
                {"name": "rest", "port": 8081, "targetPort": 8081},
                {"name": "rpc", "port": 6123, "targetPort": "rpc"},
                {"name": "blob", "port": 6124, "targetPort": null},
            ])
        );
        assert_eq!(
            printed["jobmanager"],
            json!({"blob": {"port": 42001, "targetPort": 42001},
                   "rpc": {"port": 41001, "targetPort": 41001}})
        );
        assert_eq!(printed["action"], "dry-run");
        let verbs: Vec<&str> = api.sent().iter().map(|sent| sent.verb()).collect();
        assert_eq!(verbs, ["get"]);
    }

    #[test]
    fn the_jobmanager_s_ports_are_numbers_with_their_target() {
        let mut desired = DesiredPorts::from([("blob", 33533)]);
        desired.insert_pair(
            "rpc",
            PortPair {
                port: 46911,
                target_port: 33221,
            },
        );
        assert_eq!(
            desired_json(&desired),
            json!({"blob": {"port": 33533, "targetPort": 33533},
                   "rpc": {"port": 46911, "targetPort": 33221}})
        );
    }
}
