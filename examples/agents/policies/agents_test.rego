package agents_test

import data.agents

test_read_only_tools_are_approved if {
	agents.gate.decision == "approve" with input as {"request": {"action": {"tool": "read_file", "arguments": {"path": "README.md"}}}}
}

test_deletes_are_denied if {
	agents.gate.decision == "deny" with input as {"request": {"action": {"tool": "delete_branch", "arguments": {}}}}
}

test_anything_else_goes_to_people if {
	not agents.gate with input as {"request": {"action": {"tool": "deploy", "arguments": {}}}}
}
