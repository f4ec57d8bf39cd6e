# The agent gate (docs/agents.md): an AI agent asks for approval of one exact action; a policy
# approves read-only tools at once, refuses deletes, and sends the rest to people.
#   countersign check examples/agents/agent-gate.hcl
#   countersign policy test examples/agents/policies

server {
  listen     = "127.0.0.1:8080"
  public_url = "http://127.0.0.1:8080"
  database   = "sqlite://countersign-agents.db"
}

user "alice@example.com" { groups = ["sre"] }
user "bob@example.com"   { groups = ["sre"] }
user "root@example.com"  { roles = ["admin"] }

# The agent's identity: its token (countersign token create app:coding-agent) is what it
# sends as a bearer token, to /v1 or to /mcp. It may ask, never decide.
app "coding-agent" { roles = ["request_approval"] }

resource "agent-actions" {
  kind         = "action"
  description  = "One action of the coding agent, approved before it runs"
  claim_within = "10m"
  pending_ttl  = "1h"
  on_request   = { bundle = "policies/", query = "data.agents.gate" }
  workflow = {
    steps = [ { reviewers = { one_of = ["group:sre"] } } ]
  }
}
