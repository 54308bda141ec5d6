//! Admission policies that make the API server refuse chosen writes: how a test stops a run at
//! an exact step (a run killed there could only be timed by luck). The API server enforces a
//! policy a moment after it is written, so each caller waits for its own probe write to be
//! refused (or taken again after [`delete`]) before it goes on.

use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};

/// Applies the ValidatingAdmissionPolicy `name` and its `Deny` binding: a request matching
/// `rule` (one `matchConstraints.resourceRules` entry) is refused with `message` unless the CEL
/// `expression` holds.
pub async fn deny(client: &kube::Client, name: &str, rule: Value, expression: &str, message: &str) {
    let params = PatchParams::apply("homelab-flux-test").force();
    let policy: ValidatingAdmissionPolicy = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [rule]},
            "validations": [{"expression": expression, "message": message}],
        },
    }))
    .unwrap();
    let binding: ValidatingAdmissionPolicyBinding = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {"policyName": name, "validationActions": ["Deny"]},
    }))
    .unwrap();
    Api::<ValidatingAdmissionPolicy>::all(client.clone())
        .patch(name, &params, &Patch::Apply(&policy))
        .await
        .unwrap();
    Api::<ValidatingAdmissionPolicyBinding>::all(client.clone())
        .patch(name, &params, &Patch::Apply(&binding))
        .await
        .unwrap();
}

/// Deletes the binding and the policy `name` (either may be gone already).
pub async fn delete(client: &kube::Client, name: &str) {
    let _ = Api::<ValidatingAdmissionPolicyBinding>::all(client.clone())
        .delete(name, &Default::default())
        .await;
    let _ = Api::<ValidatingAdmissionPolicy>::all(client.clone())
        .delete(name, &Default::default())
        .await;
}
