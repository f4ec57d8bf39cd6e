# Sym's fast-track flow and Abbey's on-call skip, as Rego policies (docs/policy.md).
#   cargo run --release -- serve --config examples/sym-fast-track.hcl
#   cargo run --release -- policy test examples/policies

server {
  listen     = "127.0.0.1:8080"
  public_url = "http://127.0.0.1:8080"
  database   = "sqlite://countersign-policies.db"
  # Deny policies are evaluated again for active grants this often (rule 20).
  policy_interval = "1m"
}

user "alice@example.com" {}
user "bob@example.com"   {}
user "carol@example.com" {}
user "dan@example.com"   {}
user "eve@example.com"   {}
user "frank@example.com" {}
user "grace@example.com" {}
user "mallory@example.com" { groups = ["contractors"] }
user "root@example.com"  { roles = ["admin"] }

resource "prod-aws" {
  description  = "Administrator access to the production AWS account"
  max_duration = "24h"
  durations    = ["15m", "1h", "4h", "8h", "24h"]

  field "urgency" {
    type           = "enum"
    allowed_values = ["Normal", "Emergency"]
    required       = true
  }

  # Sym's on_request hook: an emergency is approved at once.
  on_request = { bundle = "policies/", query = "data.countersign.fast_track" }
  policies = [
    { bundle = "policies/", query = "data.countersign.deny" },
    { bundle = "policies/", query = "data.countersign.warn", enforcement = "warn" },
  ]

  workflow = {
    steps = [
      {
        # Abbey's skip_if: on-call engineers skip this step.
        reviewers = { one_of = ["alice@example.com", "bob@example.com"] }
        skip_if   = [{ bundle = "policies/", query = "data.countersign.oncall" }]
      },
      {
        # Static reviewers plus this week's on-call leads, from data.
        reviewers = {
          one_of = ["dan@example.com"]
          from   = [{ bundle = "policies/", query = "data.countersign.oncall_leads" }]
        }
      },
    ]
  }
}
