//! Bundles as an admin writes them (rule 28): directories with nested data, single files, OPA
//! `.tar.gz` bundles with `.manifest` roots; errors located; evaluation bounded and failing
//! closed; `test_` rules run as `opa test` runs them.

use std::path::Path;
use std::time::Duration;

use domain::{PolicyEval, PolicyRef};
use policy::{Bundle, Policies};
use serde_json::json;

const LIMIT: Duration = Duration::from_millis(100);

fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(p, text).expect("write");
}

fn tarball(path: &Path, files: &[(&str, &str)]) {
    let file = std::fs::File::create(path).expect("create");
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    for (name, text) in files {
        // `opa build` writes absolute names (`/data.json`); the tar crate refuses to, so the
        // name is written into the header directly.
        let mut h = tar::Header::new_gnu();
        let field = &mut h.as_old_mut().name;
        field[..name.len()].copy_from_slice(name.as_bytes());
        h.set_size(text.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        tar.append(&h, text.as_bytes()).expect("append");
    }
    tar.into_inner().expect("tar").finish().expect("gzip");
}

fn eval(b: &Bundle, query: &str, input: serde_json::Value) -> Result<serde_json::Value, String> {
    b.eval(query, &input).result
}

#[test]
fn rule_28_a_directory_bundle_nests_data_by_directory() {
    let dir = tempfile::tempdir().expect("tmp");
    write(
        dir.path(),
        "rules/oncall.rego",
        "package countersign\nreviewers := data.teams.sre.oncall\nskip if input.request.requester.email in data.teams.sre.oncall\n",
    );
    write(
        dir.path(),
        "teams/sre/data.json",
        r#"{"oncall": ["carol@example.com"]}"#,
    );
    write(dir.path(), "data.json", r#"{"limits": {"max": 3}}"#);
    let b = Bundle::load(dir.path(), LIMIT).expect("loads");
    assert_eq!(
        eval(&b, "data.countersign.reviewers", json!({})),
        Ok(json!(["carol@example.com"]))
    );
    let carol = json!({"request": {"requester": {"email": "carol@example.com"}}});
    assert_eq!(eval(&b, "data.countersign.skip", carol), Ok(json!(true)));
    // Undefined is null, never an error.
    let bob = json!({"request": {"requester": {"email": "bob@example.com"}}});
    assert_eq!(eval(&b, "data.countersign.skip", bob), Ok(json!(null)));
    // A query may name data directly (dynamic reviewers kept in data.json).
    assert_eq!(
        eval(&b, "data.teams.sre.oncall", json!({})),
        Ok(json!(["carol@example.com"]))
    );
    assert_eq!(eval(&b, "data.limits.max", json!({})), Ok(json!(3)));
    assert!(b.check_query("data.countersign.skip").is_ok());
    assert!(b.check_query("data.teams.sre.oncall").is_ok());
}

#[test]
fn rule_28_a_single_rego_file_is_a_bundle() {
    let dir = tempfile::tempdir().expect("tmp");
    write(dir.path(), "p.rego", "package p\nallow if input.x == 1\n");
    let b = Bundle::load(&dir.path().join("p.rego"), LIMIT).expect("loads");
    assert_eq!(eval(&b, "data.p.allow", json!({"x": 1})), Ok(json!(true)));
}

#[test]
fn rule_28_an_opa_tarball_is_read_with_its_manifest_roots() {
    let dir = tempfile::tempdir().expect("tmp");
    let good = dir.path().join("bundle.tar.gz");
    tarball(
        &good,
        &[
            (
                "/.manifest",
                r#"{"revision": "r42", "roots": ["countersign"]}"#,
            ),
            (
                "/countersign/policy.rego",
                "package countersign\ndeny contains \"no\" if input.bad\n",
            ),
            (
                "/countersign/data.json",
                r#"{"owners": ["dan@example.com"]}"#,
            ),
        ],
    );
    let b = Bundle::load(&good, LIMIT).expect("loads");
    assert_eq!(b.revision.as_deref(), Some("r42"));
    assert_eq!(
        eval(&b, "data.countersign.deny", json!({"bad": true})),
        Ok(json!(["no"]))
    );
    assert_eq!(
        eval(&b, "data.countersign.owners", json!({})),
        Ok(json!(["dan@example.com"]))
    );

    // A package outside the roots is refused, as OPA refuses it.
    let bad = dir.path().join("outside.tar.gz");
    tarball(
        &bad,
        &[
            ("/.manifest", r#"{"roots": ["countersign"]}"#),
            ("/other/p.rego", "package other\nx := 1\n"),
        ],
    );
    let errors = Bundle::load(&bad, LIMIT).err().expect("refused");
    let text = errors[0].to_string();
    assert!(text.contains("outside.tar.gz/other/p.rego"), "{text}");
    assert!(
        text.contains("outside the bundle's roots [countersign]"),
        "{text}"
    );
}

#[test]
fn rule_28_syntax_errors_and_undefined_queries_are_located() {
    let dir = tempfile::tempdir().expect("tmp");
    write(
        dir.path(),
        "ok.rego",
        "package countersign\nallow if true\n",
    );
    write(
        dir.path(),
        "broken.rego",
        "package countersign\n\nskip if {\n  input.a ==\n}\n",
    );
    let errors = Bundle::load(dir.path(), LIMIT).err().expect("refused");
    assert_eq!(errors.len(), 1, "{errors:?}");
    let text = errors[0].to_string();
    assert!(text.contains("broken.rego:5:1"), "{text}");
    assert!(text.contains("expecting expression"), "{text}");

    std::fs::remove_file(dir.path().join("broken.rego")).expect("rm");
    let r = PolicyRef {
        bundle: dir.path().to_string_lossy().into_owned(),
        query: "data.countersign.nope".into(),
        enforcement: None,
    };
    let errors = Policies::load(
        [(&r, "hcl/main.hcl:12: in resource \"db\"".to_owned())],
        LIMIT,
    )
    .expect_err("refused");
    assert_eq!(
        errors[0].to_string(),
        format!(
            "hcl/main.hcl:12: in resource \"db\": query data.countersign.nope is not defined in \
             bundle {} (no rule or data at that path)",
            dir.path().display()
        )
    );
    let pkg = PolicyRef {
        query: "data.countersign".into(),
        ..r
    };
    let errors = Policies::load([(&pkg, "x.hcl:1".to_owned())], LIMIT).expect_err("refused");
    assert!(errors[0].message.contains("names a package"), "{errors:?}");
}

#[test]
fn rule_28_a_runtime_error_and_a_loop_fail_with_a_reason() {
    let dir = tempfile::tempdir().expect("tmp");
    write(
        dir.path(),
        "p.rego",
        "package p\n\
         boom := 1 / input.zero\n\
         spin if {\n  some i in numbers.range(1, 100000)\n  some j in numbers.range(1, 100000)\n  i * j == -1\n}\n",
    );
    let b = Bundle::load(dir.path(), Duration::from_millis(50)).expect("loads");
    let e = eval(&b, "data.p.boom", json!({"zero": 0})).expect_err("errors");
    assert!(e.contains("divide by zero"), "{e}");
    let out = b.eval("data.p.spin", &json!({}));
    let e = out.result.expect_err("stopped");
    assert_eq!(e, "evaluation stopped at the time limit of 50ms");
    // Stopped near the limit, not after ten billion iterations.
    assert!(out.micros < 5_000_000, "{}µs", out.micros);
}

#[test]
fn policies_answer_for_their_bundles_only() {
    let p = Policies::empty();
    let r = PolicyRef {
        bundle: "nowhere/".into(),
        query: "data.x.y".into(),
        enforcement: None,
    };
    let e = p.eval(&r, &json!({})).result.expect_err("not loaded");
    assert_eq!(e, "bundle nowhere/ is not loaded");
}

#[test]
fn rule_31_test_rules_pass_and_fail_like_opa_test() {
    let dir = tempfile::tempdir().expect("tmp");
    write(
        dir.path(),
        "p.rego",
        "package p\nallow if input.user == \"root\"\n",
    );
    write(
        dir.path(),
        "p_test.rego",
        "package p_test\nimport data.p\n\
         test_root_allowed if p.allow with input as {\"user\": \"root\"}\n\
         test_bob_denied if not p.allow with input as {\"user\": \"bob\"}\n\
         test_wrong if p.allow with input as {\"user\": \"bob\"}\n",
    );
    let b = Bundle::load(dir.path(), LIMIT).expect("loads");
    let results = b.run_tests();
    let summary: Vec<(String, bool)> = results.iter().map(|r| (r.name.clone(), r.passed)).collect();
    assert_eq!(
        summary,
        [
            ("data.p_test.test_root_allowed".to_owned(), true),
            ("data.p_test.test_bob_denied".to_owned(), true),
            ("data.p_test.test_wrong".to_owned(), false),
        ]
    );
    assert_eq!(results[2].detail.as_deref(), Some("undefined"));
}
