package state

import (
	"testing"
	"time"
)

func TestOptionsCheck(t *testing.T) {
	var o Options
	if err := o.Check(); err != nil || o.Retention() != 400*24*time.Hour || o.PendingAlertAfter() != 3*24*time.Hour {
		t.Fatalf("defaults: %v, %v, %v", err, o.Retention(), o.PendingAlertAfter())
	}
	if o.RunTime() != 6*time.Hour {
		t.Fatalf("max_run_time default %v", o.RunTime())
	}
	o = Options{AuditRetention: " 30d ", PendingAlert: "36h", MaxRunTime: " 90m"}
	if err := o.Check(); err != nil || o.Retention() != 30*24*time.Hour || o.PendingAlertAfter() != 36*time.Hour || o.RunTime() != 90*time.Minute {
		t.Fatalf("set: %v, %v, %v", err, o.Retention(), o.PendingAlertAfter())
	}
	for _, tc := range []struct {
		o    Options
		want string
	}{
		{Options{AuditRetention: "forever"}, `audit_retention: "forever" is neither a number of days (400d) nor a duration (72h)`},
		{Options{PendingAlert: "0d"}, `pending_alert: "0d" is neither a number of days (400d) nor a duration (72h)`},
		{Options{PendingAlert: "-2h"}, `pending_alert: "-2h" is neither a number of days (400d) nor a duration (72h)`},
		{Options{MaxRunTime: "0s"}, `max_run_time: "0s" is not a duration (6h, 90m)`},
		{Options{MaxRunTime: "all night"}, `max_run_time: "all night" is not a duration (6h, 90m)`},
	} {
		if err := tc.o.Check(); err == nil || err.Error() != tc.want {
			t.Errorf("%+v: got %v, want %q", tc.o, err, tc.want)
		}
	}
}
