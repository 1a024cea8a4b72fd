//! The manifests an operator applies: every object valid against the Kubernetes OpenAPI
//! schemas (kubernetes-validate, strict, two Kubernetes versions) in both variants (privileged,
//! capabilities only), and lint-clean for the security settings docs/deploy.md promises. The
//! checker's self-test breaks each rule once to show that it can fail.

use std::process::Command;

use remora_bpf_tests::workspace_root;

#[test]
fn manifests_validate_strictly_and_pass_the_security_lint() {
    let root = workspace_root();
    let python = root.join(".venv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run `cargo xtask setup` (it installs kubernetes-validate in .venv)",
        python.display()
    );
    let out = Command::new(&python)
        .arg(root.join("manifests/check.py"))
        .arg("--self-test")
        .output()
        .expect("running manifests/check.py");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "manifests/check.py failed:\n{text}");
    assert!(text.contains("objects valid (strict"), "{text}");
}
