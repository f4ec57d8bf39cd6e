"""Rule 27 through a real GraphQL client: gql loads the schema by introspection
(fetch_schema_from_transport=True), validates the seed's four documents against it with
graphql-core, and runs them unchanged against the server.

Usage: graphql_client.py BASE_URL APP_TOKEN REVIEWER_TOKEN CALLBACK_URL
Prints one line per step; exits non-zero (with a traceback) on any mismatch.
"""

import json
import sys
import urllib.request

from gql import Client, GraphQLRequest
from gql.transport.requests import RequestsHTTPTransport
from graphql import build_schema, print_schema

# The seed's documents, exactly as Verified Orchestration's documentation writes them.
CREATE = """mutation CreateApprovalRequest($request: ApprovalRequestInput!) {
createApprovalRequest(request: $request) {
id
portalUrl
callbackSecret
}
}"""
ACTIONED = """query ActionedApprovalData($approvalRequestId: ID!) {
actionedApprovalData(id: $approvalRequestId) {
status
actionedComment
actionedBy {
id
name
}
actionedAt
}
}"""
UPDATE = """mutation UpdateApprovalRequest($updateApprovalRequestId: ID!, $input: UpdateApprovalRequestInput!) {
updateApprovalRequest(id: $updateApprovalRequestId, input: $input)
}"""
CANCEL = """mutation CancelApprovalRequest($cancelApprovalRequestId: ID!) {
cancelApprovalRequest(id: $cancelApprovalRequestId)
}"""


def rest(base, token, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("Authorization", "Bearer " + token)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)


def seed_request(callback):
    return {
        "request": {
            "callback": {"url": callback},
            "purpose": "Please provide ChangeManager approval for deployment to Production of the API repository.",
            "referenceUrl": "https://github.com/AcmeSoftware/api/actions/runs/8595211647",
            "requestType": "GitHubApprovalRequest",
            "presentationRequestInput": {"requestedCredentials": [{"type": "ChangeManager"}]},
        }
    }


def main():
    base, app_token, reviewer_token, callback = sys.argv[1:5]
    transport = RequestsHTTPTransport(
        url=base + "/graphql",
        headers={"Authorization": "Bearer " + app_token},
        timeout=30,
        retries=0,
    )
    client = Client(transport=transport, fetch_schema_from_transport=True)
    with client as session:
        schema = client.schema
        assert schema is not None, "no schema was loaded by introspection"
        mutations = sorted(schema.mutation_type.fields)
        queries = sorted(schema.query_type.fields)
        assert mutations == [
            "cancelApprovalRequest",
            "createApprovalRequest",
            "updateApprovalRequest",
        ], mutations
        assert queries == ["actionedApprovalData"], queries
        print("introspection: mutations", mutations, "queries", queries)

        # The SDL the server serves describes the same schema as introspection.
        with urllib.request.urlopen(base + "/graphql/schema.graphql", timeout=30) as r:
            sdl = r.read().decode()
        assert print_schema(build_schema(sdl)) == print_schema(schema), "SDL and introspection differ"
        print("sdl: matches introspection")

        created = session.execute(GraphQLRequest(CREATE, variable_values=seed_request(callback)))
        c = created["createApprovalRequest"]
        assert c["callbackSecret"].startswith("whsec_"), c
        assert c["portalUrl"].endswith("/requests/" + c["id"]), c
        print("create: ok", c["id"])

        pending = session.execute(
            GraphQLRequest(ACTIONED, variable_values={"approvalRequestId": c["id"]})
        )
        assert pending == {"actionedApprovalData": None}, pending
        print("actioned while pending: null")

        updated = session.execute(
            GraphQLRequest(
                UPDATE,
                variable_values={
                    "updateApprovalRequestId": c["id"],
                    "input": {"purpose": "Please approve the deployment **at 6am Friday**."},
                },
            )
        )
        assert updated == {"updateApprovalRequest": True}, updated
        print("update: true")

        # Cancel a second request while the first is pending: once the first is approved, rule 5
        # would answer a second ask with its grant.
        second = session.execute(GraphQLRequest(CREATE, variable_values=seed_request(callback)))
        sid = second["createApprovalRequest"]["id"]
        cancelled = session.execute(
            GraphQLRequest(CANCEL, variable_values={"cancelApprovalRequestId": sid})
        )
        assert cancelled == {"cancelApprovalRequest": True}, cancelled
        state = rest(base, app_token, "GET", f"/v1/requests/{sid}")["state"]
        assert state == "cancelled", state
        print("cancel: true")
        rest(base, reviewer_token, "POST", f"/v1/requests/{c['id']}/reviews",
             {"decision": "approve", "comment": "LGTM"})
        actioned = session.execute(
            GraphQLRequest(ACTIONED, variable_values={"approvalRequestId": c["id"]})
        )["actionedApprovalData"]
        assert actioned["status"] == "approved", actioned
        assert actioned["actionedComment"] == "LGTM", actioned
        assert actioned["actionedBy"]["id"] == actioned["actionedBy"]["name"], actioned
        assert actioned["actionedAt"], actioned
        print("actioned: approved by", actioned["actionedBy"]["id"])

    print("ok")


if __name__ == "__main__":
    main()
