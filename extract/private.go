package extract

import (
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
)

// SecretError is a client secret that is not where the config says it is:
// a config error, the command did nothing and exits 2.
type SecretError struct{ msg string }

func (e *SecretError) Error() string { return e.msg }

func secretErrorf(format string, args ...any) error {
	return &SecretError{msg: fmt.Sprintf(format, args...)}
}

// Secret reads the client secret where the config says it is; system is
// the config's section (d365, campaign), for messages.
func (cr *Credentials) Secret(system string) (string, error) {
	if cr.ClientSecretEnv != "" {
		v := os.Getenv(cr.ClientSecretEnv)
		if v == "" && !shownEnvName(cr.ClientSecretEnv) {
			return "", secretErrorf("%s.client_secret_env: the environment variable it names is not set (its name is not shown: it is not written as variables are, and may be the secret itself)", system)
		}
		if v == "" {
			return "", secretErrorf("%s.client_secret_env: environment variable %s is not set", system, cr.ClientSecretEnv)
		}
		return v, nil
	}
	b, err := os.ReadFile(cr.ClientSecretFile)
	if err != nil {
		return "", secretErrorf("%s.client_secret_file: %v", system, err)
	}
	v := strings.TrimSpace(string(b))
	if v == "" {
		return "", secretErrorf("%s.client_secret_file: %s is empty", system, cr.ClientSecretFile)
	}
	return v, nil
}

// shownEnvName says whether a client_secret_env value is written the way
// environment variables are (OPTSYNC_D365_SECRET), so that a message may
// name it. A valid name that is not — lower case, or one long word — may
// still be a secret.
func shownEnvName(s string) bool {
	return conventionalEnvName.MatchString(s) && (strings.Contains(s, "_") || len(s) <= 12)
}

var conventionalEnvName = regexp.MustCompile(`^[A-Z][A-Z0-9]*(_[A-Z0-9]+)*$`)

// Private is the config's free-text values, kept out of what the run
// history stores: every value that is not checked against a fixed set or
// a strict shape (direction, policy, source, target, resource, mapped
// field names, numbers and durations), since any of them may hold a secret
// pasted into the wrong key.
type Private struct{ values []privateValue }

// privateValue is one config value that the run history must not hold.
// credential marks the keys meant for credentials (client_id, the secret's
// env var or file, tenant_id): a secret pasted into the wrong key most
// likely lands in one of them, so their short values are hidden too.
type privateValue struct {
	key, value string
	credential bool
}

// Add keeps the value of a config key.
func (p *Private) Add(key, v string) {
	v = strings.TrimSpace(v)
	credential := strings.Contains(key, "client_") || strings.HasSuffix(key, "tenant_id")
	pv := privateValue{key, v, credential}
	if len(v) < 3 || slices.Contains(p.values, pv) {
		return
	}
	p.values = append(p.values, pv)
	// Longest first, so a path is replaced before a shorter value inside it.
	slices.SortStableFunc(p.values, func(a, b privateValue) int { return len(b.value) - len(a.value) })
}

// AddPrivate adds the read's free-text values to p: the exports' columns
// and time layouts, the credentials, the services' addresses. Called
// before Check and after, it keeps them as written and as resolved.
func (o *Options) AddPrivate(p *Private) {
	for i, f := range o.Campaign.FieldTimes {
		p.Add(fmt.Sprintf("mappings[%d].campaign_modified_column", i), f)
	}
	for _, s := range []struct {
		in *Input
		cr *Credentials
	}{{&o.D365, &o.DataverseConn.Credentials}, {&o.Campaign, &o.CampaignConn.Credentials}} {
		p.Add(s.in.Key+".time_layout", s.in.TimeLayout)
		for k, v := range s.in.Columns {
			p.Add(s.in.Key+".columns."+k, v)
		}
		p.Add(s.in.Key+".client_id", s.cr.ClientID)
		p.Add(s.in.Key+".client_secret_env", s.cr.ClientSecretEnv)
		p.Add(s.in.Key+".client_secret_file", s.cr.ClientSecretFile)
		p.Add(s.in.Key+".client_secret", s.cr.ClientSecret)
	}
	d, c := &o.DataverseConn, &o.CampaignConn
	p.Add("d365.url", d.URL)
	p.Add("d365.tenant_id", d.TenantID)
	p.Add("d365.authority_url", d.AuthorityURL)
	p.Add("campaign.base_url", c.BaseURL)
	p.Add("campaign.organization", c.Organization)
	p.Add("campaign.ims_url", c.IMSURL)
	p.Add("campaign.changed_filter.name", c.ChangedFilter.Name)
	p.Add("campaign.changed_filter.param", c.ChangedFilter.Param)
	for i, sc := range c.Scopes {
		p.Add(fmt.Sprintf("campaign.scopes[%d]", i), sc)
	}
}

// Redact is text for the run history: every config value in it replaced
// by its key (<d365.client_secret_env>). Values of 8 characters or more
// are replaced wherever they occur. Shorter ones are no secret unless they
// sit in a credential key, where they are replaced as whole words only (so
// that a short client id does not eat part of a word); other short values
// stay, or a changed_filter param "since" would turn every "since" of a
// service's message into a key name.
func (p *Private) Redact(text string) string {
	for _, v := range p.values {
		short := len(v.value) < 8
		if short && !v.credential {
			continue
		}
		text = replaceValue(text, v.value, "<"+v.key+">", short)
	}
	return text
}

func replaceValue(s, old, repl string, wholeWord bool) string {
	if !wholeWord {
		return strings.ReplaceAll(s, old, repl)
	}
	word := func(b byte) bool {
		return b == '_' || b >= '0' && b <= '9' || b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z'
	}
	var b strings.Builder
	for {
		i := strings.Index(s, old)
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		j := i + len(old)
		if (i == 0 || !word(s[i-1])) && (j == len(s) || !word(s[j])) {
			b.WriteString(s[:i])
			b.WriteString(repl)
			s = s[j:]
			continue
		}
		b.WriteString(s[:i+1])
		s = s[i+1:]
	}
}
