# Kubiya's news workflow as a gated runbook (docs/runbooks.md, issue 17).
#   countersign check examples/runbooks/news.hcl

server {
  listen     = "127.0.0.1:8080"
  public_url = "http://127.0.0.1:8080"
  database   = "sqlite://countersign-runbooks.db"
}

user "alice@example.com" {}
user "bob@example.com"   { groups = ["news-ops"] }

# The resources the news actions need, one per action. Both are part_of the runbook, so that
# a reviewer who approves the entire workflow covers every action of it (rule 15); one who
# approves only the first leaves the second to be asked for when the run gets there.
resource "news-sources" {
  description  = "List the news agencies' channels"
  max_duration = "4h"
  durations    = ["5m", "15m", "1h", "4h"]
  part_of      = "get_news_workflow"
  workflow = {
    steps = [ { reviewers = { one_of = ["group:news-ops"] } } ]
  }
}

resource "news-articles" {
  description  = "Read a news channel's articles"
  max_duration = "4h"
  durations    = ["5m", "15m", "1h", "4h"]
  part_of      = "get_news_workflow"
  workflow = {
    steps = [ { reviewers = { one_of = ["group:news-ops"] } } ]
  }
}

action_store "news" {
  action "get_all_sources" {
    resource = "news-sources"
    command  = ["sh", "actions/sources.sh"]
    timeout  = "30s"
  }
  action "get_articles" {
    resource = "news-articles"
    command  = ["sh", "actions/articles.sh"]
    timeout  = "30s"
  }
}

runbook "get_news_workflow" {
  file        = "runbooks/news.yaml"
  description = "Pick a news channel and read its cover page"
}
