package extract

import (
	"context"
	"fmt"
	"time"
)

// CheckMapping checks the mapped fields (in mapping order) against the
// live Dataverse: each exists on contact and is boolean, and change
// tracking is enabled when the config counts on it (wantTracking). It
// returns what is wrong, each naming its config key, and whether change
// tracking is on.
func (d *Dataverse) CheckMapping(ctx context.Context, fields []string, wantTracking bool) (problems []string, tracking bool, err error) {
	types, tracking, err := d.Attributes(ctx)
	if err != nil {
		return nil, false, err
	}
	for i, f := range fields {
		switch t, ok := types[f]; {
		case !ok:
			problems = append(problems, fmt.Sprintf("mappings[%d]: d365 field %s does not exist on contact", i, f))
		case t != "Boolean":
			problems = append(problems, fmt.Sprintf("mappings[%d]: d365 field %s is %s, not Boolean", i, f, t))
		}
	}
	if wantTracking && !tracking {
		problems = append(problems, "d365.change_tracking: change tracking is not enabled on the contact table (enable it, or set change_tracking: false)")
	}
	return problems, tracking, nil
}

// CheckMapping checks the mapped fields (in mapping order) against the
// live Campaign: each is a boolean of the profile resource, and the
// changed-since filter, when configured, answers.
func (c *Campaign) CheckMapping(ctx context.Context, fields []string, conn *CampaignConn) ([]string, error) {
	types, err := c.ResourceFields(ctx)
	if err != nil {
		return nil, err
	}
	var problems []string
	for i, f := range fields {
		switch t, ok := types[f]; {
		case !ok:
			problems = append(problems, fmt.Sprintf("mappings[%d]: campaign field %s is not on the %s profile resource", i, f, conn.Resource))
		case t != "boolean":
			problems = append(problems, fmt.Sprintf("mappings[%d]: campaign field %s is %s, not boolean", i, f, t))
		}
	}
	if conn.ChangedFilter.Name != "" {
		_, err := c.ChangedSince(ctx, conn.ChangedFilter.Name, conn.ChangedFilter.Param, time.Now().Add(time.Minute), NewKeys().Writer(), func(*Profile) {}, func(Reject) {})
		if err != nil {
			problems = append(problems, fmt.Sprintf("campaign.changed_filter: by%s?%s= does not answer: %v", conn.ChangedFilter.Name, conn.ChangedFilter.Param, err))
		}
	}
	return problems, nil
}
