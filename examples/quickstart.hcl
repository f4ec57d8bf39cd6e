# Countersign quickstart: the three-step workflow of Abbey's documentation, on SQLite.
# Start it from the repository root, as the README does (`--dev` offers the portal's
# development sign-in, refused unless the server listens on loopback):
#   cargo run --release -- serve --dev --config examples/quickstart.hcl

server {
  listen     = "127.0.0.1:8080"
  public_url = "http://127.0.0.1:8080"
  database   = "sqlite://countersign.db"
}

user "alice@example.com" { groups = ["dba"] }
user "bob@example.com"   { groups = ["dba"] }
user "carol@example.com" {}
user "dan@example.com"   { groups = ["security"] }
user "eve@example.com"   { groups = ["leads"] }
user "frank@example.com" {}
user "grace@example.com" {}
user "root@example.com"  { roles = ["admin"] }

group "engineering" {
  members = ["grace@example.com", "carol@example.com"]
}

# The exec connector runs a program for grant and another for revoke, with a JSON description
# of the grant on stdin. This one appends to a log file so you can watch it work.
connector "demo-log" {
  type           = "exec"
  grant_command  = ["sh", "connectors/log-grant.sh", "grant"]
  revoke_command = ["sh", "connectors/log-grant.sh", "revoke"]
  timeout        = "10s"
}

resource "prod-db-read" {
  description  = "Read-only role on the production database"
  connector    = "demo-log"
  grant        = { role = "readonly" }
  max_duration = "24h"
  durations    = ["30s", "5m", "15m", "1h", "4h", "24h"]
  owners       = ["group:dba"]
  part_of      = "prod-db"

  field "ticket" {
    type     = "string"
    required = true
  }
  field "urgency" {
    type           = "enum"
    allowed_values = ["Normal", "Emergency"]
    default        = "Normal"
  }

  # Abbey's workflow block, as written in its documentation.
  workflow = {
    steps = [
      {
        reviewers = {
          one_of = ["alice@example.com", "bob@example.com", "carol@example.com"]
        }
      },
      {
        reviewers = {
          all_of = ["dan@example.com", "eve@example.com"]
        }
      },
      {
        reviewers = {
          one_of = ["frank@example.com"]
        }
      }
    ]
  }
}

resource "prod-db-write" {
  description  = "Read-write role on the production database"
  connector    = "demo-log"
  grant        = { role = "readwrite" }
  max_duration = "4h"
  owners       = ["group:dba"]
  part_of      = "prod-db"
  workflow = {
    steps = [
      { reviewers = { one_of = ["group:dba"] } },
    ]
  }
}

# Approval-only: the decision itself is the product (a deploy gate, say).
resource "deploy-prod" {
  description  = "Deploy to production"
  max_duration = "1h"
  pending_ttl  = "2h"
  workflow = {
    steps = [
      { reviewers = { quorum = { min = 2, of = ["group:dba", "group:security", "group:leads"] } } },
    ]
  }
}
