//! `countersign-bench policy`: the cost of one policy decision, as the engine pays it.
//!
//! Each evaluation goes through [`policy::Bundle::eval`], the path every request takes: a
//! clone of the compiled engine, the input document converted and set, the rule evaluated
//! under the time limit, and the result converted back to JSON. Two policies are measured:
//!
//! - `fast-track`: Sym's `on_request` hook from `examples/policies` (urgency = Emergency),
//!   with an input document shaped as the engine builds it (docs/policy.md).
//! - `rbac`: the role-based access control example of OPA's policy-performance
//!   documentation (bindings and roles as data, subject/action/resource as input), for which
//!   OPA documents a 35.8 µs median.
//!
//! Each run evaluates `--iterations` times after a warm-up and reports p50, p99 and the mean;
//! `--runs` repeats it, and the summary gives the median of the runs' p50 and p99 with their
//! spread.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use policy::{Bundle, DEFAULT_TIMEOUT};

use crate::instant;
use crate::percentile;
use serde_json::{Value, json};

#[derive(Debug, clap::Args)]
pub struct PolicyBenchArgs {
    /// Evaluations per run, after a warm-up of a tenth as many.
    #[arg(long, default_value_t = 20_000)]
    pub iterations: usize,
    /// Runs per policy.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// The example bundle holding the fast-track policy.
    #[arg(long, default_value = "examples/policies")]
    pub bundle: PathBuf,
}

/// OPA's RBAC example, written in Rego v1 (roles and bindings are data).
const RBAC: &str = r#"
package rbac

default allow := false

allow if {
	some role in user_roles
	role in granting_roles
}

user_roles contains role if {
	some b in data.bindings
	b.user == input.subject
	some role in b.roles
}

granting_roles contains role.name if {
	some role in data.roles
	some p in role.permissions
	p.resource == input.resource
	p.action == input.action
}
"#;

const RBAC_DATA: &str = r#"{
  "bindings": [
    {"user": "alice", "roles": ["dev", "test"]},
    {"user": "bob", "roles": ["test"]}
  ],
  "roles": [
    {"name": "dev", "permissions": [
      {"resource": "foo123", "action": "write"},
      {"resource": "foo123", "action": "read"}
    ]},
    {"name": "test", "permissions": [
      {"resource": "foo123", "action": "read"}
    ]}
  ]
}"#;

/// An input document as the engine builds it for an `on_request` hook.
fn fast_track_input() -> Value {
    json!({
        "request": {
            "id": "0193f6c2-6f1e-7000-8000-000000000001",
            "requester": {
                "id": "bob@example.com",
                "email": "bob@example.com",
                "groups": ["sre"],
                "attributes": {"team": "payments"},
            },
            "resource": {
                "name": "prod-aws",
                "part_of": null,
                "connector": "aws",
                "grant": {"role": "admin"},
            },
            "reason": "incident 4711",
            "fields": {"urgency": "Emergency"},
            "duration": "1h",
            "duration_seconds": 3600,
            "created_at": "2026-11-21T09:30:00.000Z",
            "start_at": null,
            "extends": null,
        },
        "now": "2026-11-21T09:30:00.000Z",
        "now_ns": 1_795_253_400_000_000_000_i64,
    })
}

struct Run {
    p50: f64,
    p99: f64,
    mean: f64,
}

fn measure(
    b: &Bundle,
    query: &str,
    input: &Value,
    expect: &Value,
    n: usize,
) -> Result<Run, String> {
    for _ in 0..n / 10 {
        b.eval(query, input).result?;
    }
    let mut ns = Vec::with_capacity(n);
    for _ in 0..n {
        let t = instant();
        let out = b.eval(query, input).result?;
        ns.push(t.elapsed().as_nanos() as f64);
        if &out != expect {
            return Err(format!("{query} gave {out}, expected {expect}"));
        }
    }
    ns.sort_by(f64::total_cmp);
    Ok(Run {
        p50: percentile(&ns, 50.0) / 1000.0,
        p99: percentile(&ns, 99.0) / 1000.0,
        mean: ns.iter().sum::<f64>() / ns.len() as f64 / 1000.0,
    })
}

fn median(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn bench(
    name: &str,
    b: &Bundle,
    query: &str,
    input: &Value,
    expect: &Value,
    args: &PolicyBenchArgs,
) -> Result<(), String> {
    let mut runs = vec![];
    for i in 0..args.runs.max(1) {
        let r = measure(b, query, input, expect, args.iterations.max(100))?;
        println!(
            "{name} run {}: p50 {:.1} µs, p99 {:.1} µs, mean {:.1} µs",
            i + 1,
            r.p50,
            r.p99,
            r.mean
        );
        runs.push(r);
    }
    let (p50, p50_lo, p50_hi) = median(runs.iter().map(|r| r.p50).collect());
    let (p99, p99_lo, p99_hi) = median(runs.iter().map(|r| r.p99).collect());
    println!(
        "{name}: p50 {p50:.1} µs ({p50_lo:.1}–{p50_hi:.1}), p99 {p99:.1} µs ({p99_lo:.1}–{p99_hi:.1}) \
         over {} runs of {} evaluations",
        runs.len(),
        args.iterations
    );
    Ok(())
}

fn rbac_bundle(dir: &Path) -> Result<Bundle, String> {
    std::fs::write(dir.join("rbac.rego"), RBAC).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("data.json"), RBAC_DATA).map_err(|e| e.to_string())?;
    Bundle::load(dir, DEFAULT_TIMEOUT).map_err(|e| format!("{e:?}"))
}

pub fn run(args: PolicyBenchArgs) -> ExitCode {
    let result = (|| -> Result<(), String> {
        let fast = Bundle::load(&args.bundle, DEFAULT_TIMEOUT).map_err(|e| format!("{e:?}"))?;
        let approve = json!({
            "decision": "approve",
            "reason": "bob@example.com was fast tracked to prod-aws",
        });
        bench(
            "fast-track",
            &fast,
            "data.countersign.fast_track",
            &fast_track_input(),
            &approve,
            &args,
        )?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let rbac = rbac_bundle(dir.path())?;
        // OPA's example input: bob may read foo123 (role test), not write it.
        let input = json!({"subject": "bob", "action": "write", "resource": "foo123"});
        bench(
            "rbac",
            &rbac,
            "data.rbac.allow",
            &input,
            &json!(false),
            &args,
        )?;
        Ok(())
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("countersign-bench policy: {e}");
            ExitCode::from(3)
        }
    }
}
