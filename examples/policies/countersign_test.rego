# Tests for countersign.rego: `countersign policy test examples/policies`.
package countersign_test

import data.countersign

request(fields, email) := {"request": {
	"fields": fields,
	"requester": {"email": email, "groups": []},
	"resource": {"name": "prod-db-read"},
	"duration": "1h",
	"duration_seconds": 3600,
}}

test_emergency_is_fast_tracked if {
	d := countersign.fast_track with input as request({"urgency": "Emergency"}, "bob@example.com")
	d.decision == "approve"
	d.reason == "bob@example.com was fast tracked to prod-db-read"
}

test_normal_urgency_goes_to_reviewers if {
	not countersign.fast_track with input as request({"urgency": "Normal"}, "bob@example.com")
}

test_on_call_engineer_skips_the_first_step if {
	s := countersign.oncall with input as request({}, "carol@example.com")
	s.skip
}

test_others_do_not_skip if {
	not countersign.oncall with input as request({}, "bob@example.com")
}

test_contractors_are_denied if {
	inp := {"request": {"requester": {"email": "x@example.com", "groups": ["contractors"]}, "duration_seconds": 60}}
	count(countersign.deny) == 1 with input as inp
}

test_long_requests_warn if {
	inp := {"request": {"requester": {"email": "x@example.com", "groups": []}, "duration": "8h", "duration_seconds": 28800}}
	countersign.warn == {"asks for 8h, longer than the usual 4h"} with input as inp
}
