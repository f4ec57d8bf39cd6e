# The agent gate's policy (docs/agents.md): which of an agent's actions need a person.
package agents

# Read-only tools: approved at once, with the reason in the audit log.
harmless := {"read_file", "list_directory", "search_code"}

# on_request hook of the "agent-actions" resource. Undefined (anything not matched below)
# sends the action to the resource's reviewers.
gate := {"decision": "approve", "reason": sprintf("%s is read-only", [input.request.action.tool])} if {
	input.request.action.tool in harmless
}

gate := {"decision": "deny", "reason": "agents may not delete data; ask a person to do it"} if {
	startswith(input.request.action.tool, "delete_")
}
