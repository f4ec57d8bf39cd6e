# Countersign's example policies. Every rule reads the input document of docs/policy.md.
package countersign

# Sym's on_request hook, in Rego: an emergency is approved at once, with a reason naming who
# asked and for what. Any other result (here: undefined) leaves the request to its reviewers.
fast_track := {"decision": "approve", "reason": reason} if {
	input.request.fields.urgency == "Emergency"
	reason := sprintf("%s was fast tracked to %s", [
		input.request.requester.email,
		input.request.resource.name,
	])
}

# Abbey's skip_if: the first step is skipped for requesters who are on call (data.oncall
# comes from oncall/data.json, nested by directory as OPA does).
oncall := {"skip": true, "reason": sprintf("%s is on call", [input.request.requester.email])} if {
	input.request.requester.email in data.oncall.engineers
}

# A deny policy: every message denies the request at once, and a grant still active when a
# message appears is revoked early (rule 20).
deny contains "contractors may not hold production write access" if {
	"contractors" in input.request.requester.groups
}

deny contains msg if {
	input.request.requester.email in data.oncall.suspended
	msg := sprintf("%s is suspended from production access", [input.request.requester.email])
}

# A warn policy: its messages are shown to reviewers, and decide nothing.
warn contains msg if {
	input.request.duration_seconds > 4 * 3600
	msg := sprintf("asks for %s, longer than the usual 4h", [input.request.duration])
}

# Dynamic reviewers: the on-call leads review too, whoever they are this week.
oncall_leads := data.oncall.leads
