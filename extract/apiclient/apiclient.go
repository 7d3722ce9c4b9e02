// Package apiclient is the one HTTP client both API connectors share, for
// their reads (extract) and their writes (load): OAuth 2.0 client-credential
// tokens, renewed when they expire or are refused, and retries with backoff
// that honour Retry-After. It lives under extract, the first stage, so that
// every later stage can use it without importing backwards.
package apiclient

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-retryablehttp"
	"github.com/rs/zerolog"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"optsync/extract"
)

// Config is what both connectors' HTTP clients are made of: one retry
// policy and one way of holding a token, shared, not copied.
type Config struct {
	TokenURL     string
	ClientID     string
	ClientSecret string
	Scopes       []string
	Timeout      time.Duration // per attempt
	MaxTries     int
	// Header is added to every API request (Campaign wants X-Api-Key).
	Header http.Header
	// OnThrottle, when set, is told of every 429 answer, before its wait.
	OnThrottle func()
}

// New returns an HTTP client that gets OAuth 2.0 client-credential
// tokens, renews them when they expire or a request answers 401 (once per
// request), and retries throttled, failed and dropped requests: 429 and 503
// wait exactly as long as Retry-After says, other 5xx and network errors
// back off exponentially with jitter, and a request gives up after
// MaxTries with an error naming the last status. Throttling (429, 503) is
// waited out and not counted as a try: a service that throttles for hours
// is bounded by the run's max_run_time instead. A request the writer
// marks Unrepeatable (a $batch) is not sent again after a failure
// that leaves its outcome unknown: the writer reads the records back.
func New(c Config, log zerolog.Logger) *http.Client {
	cc := &clientcredentials.Config{ClientID: c.ClientID, ClientSecret: c.ClientSecret, TokenURL: c.TokenURL, Scopes: c.Scopes,
		AuthStyle: oauth2.AuthStyleInParams}
	plain := &http.Client{Timeout: c.Timeout, Transport: http.DefaultTransport.(*http.Transport).Clone()}
	auth := &bearer{cfg: cc, base: plain.Transport, header: c.Header, tokenClient: plain}
	rc := retryablehttp.NewClient()
	rc.HTTPClient = &http.Client{Timeout: c.Timeout, Transport: auth}
	rc.RetryMax = math.MaxInt32 // tries are counted in CheckRetry, throttling left out
	rc.RetryWaitMin = waitMin
	rc.RetryWaitMax = waitMax
	rc.Logger = nil
	rc.Backoff = backoff
	rc.CheckRetry = func(ctx context.Context, resp *http.Response, err error) (bool, error) {
		// Whether this try was throttled (not run), before any answer below.
		st, _ := ctx.Value(triesKey{}).(*tries)
		throttled := resp != nil && (resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable)
		if st != nil {
			st.throttled = throttled
		}
		// A token endpoint that refuses the credentials will refuse them
		// again: fail now, with its reason.
		if errors.Is(err, errCredentials) {
			return false, err
		}
		if resp != nil && resp.StatusCode == http.StatusTooManyRequests && c.OnThrottle != nil {
			c.OnThrottle()
		}
		// 429 and 503 say the request was not run; a lost connection or
		// another 5xx does not.
		if isUnrepeatable(ctx) && ctx.Err() == nil && (err != nil || resp.StatusCode >= 500 && resp.StatusCode != http.StatusServiceUnavailable) {
			return false, nil
		}
		// A PATCH clearing a Campaign opt-out is tried once: after a wait
		// it must be preceded by a fresh re-read, which its caller makes.
		if isSingleTry(ctx) {
			return false, nil
		}
		retry, cerr := retryablehttp.DefaultRetryPolicy(ctx, resp, err)
		if !retry || cerr != nil {
			return retry, cerr
		}
		if throttled {
			return true, nil // not run: a wait, not a try
		}
		if st != nil {
			if st.failed++; st.failed >= max(c.MaxTries, 1) {
				return false, nil
			}
		}
		return true, nil
	}
	rc.RequestLogHook = func(_ retryablehttp.Logger, req *http.Request, attempt int) {
		if attempt > 0 {
			log.Debug().Str("method", req.Method).Str("path", req.URL.Path).Int("attempt", attempt+1).Msg("retrying API request")
		}
	}
	rc.ErrorHandler = func(resp *http.Response, err error, tries int) (*http.Response, error) {
		if err != nil {
			// not the *url.Error: its text holds the query string
			return resp, fmt.Errorf("gave up after %s: %w", triesText(tries), extract.Unquery(err))
		}
		// The last answer goes back to the caller, whose error names its
		// status and the service's own error code and message.
		return resp, nil
	}
	return &http.Client{Transport: countTries{rc.StandardClient().Transport}}
}

// triesKey holds a request's tries in its context.
type triesKey struct{}

// tries counts the tries of one request that failed in a way that counts
// (throttling does not), and says whether the last answer was throttling.
type tries struct {
	failed    int
	throttled bool
}

// countTries gives every request its own count of tries. A request given
// up while it waited out throttling (the run stopped) did not run: its
// error says so (ErrNotSent), so that nobody reads it back.
type countTries struct{ next http.RoundTripper }

func (c countTries) RoundTrip(r *http.Request) (*http.Response, error) {
	st := &tries{}
	resp, err := c.next.RoundTrip(r.WithContext(context.WithValue(r.Context(), triesKey{}, st)))
	if err != nil && st.throttled && r.Context().Err() != nil {
		err = fmt.Errorf("%w (%w)", ErrNotSent, err)
	}
	return resp, err
}

// backoff waits what the server asked for on 429 and 503; otherwise
// Backoff's wait before the attempt's retry (attempt counts from 0).
func backoff(min, max time.Duration, attempt int, resp *http.Response) time.Duration {
	if resp != nil && (resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable) &&
		resp.Header.Get("Retry-After") != "" {
		return retryablehttp.DefaultBackoff(min, max, attempt, resp)
	}
	return Backoff(attempt + 1)
}

// Backoff is the wait before the n-th retry (from 1) of a failed request:
// exponential from half a second up to two minutes, with jitter so that
// parallel workers do not retry in step. The client waits it between its
// own tries; a caller that tries once at a time (SingleTry) waits it too.
func Backoff(n int) time.Duration {
	d := min(waitMin<<min(max(n-1, 0), 8), waitMax)
	return d/2 + rand.N(d/2+1)
}

// The bounds of Backoff's waits.
const (
	waitMin = 500 * time.Millisecond
	waitMax = 2 * time.Minute
)

// RetryAfter is how long a throttled answer (429, 503) asks to wait: its
// Retry-After in seconds or as a date, at least a millisecond; a second
// when it says nothing. For a caller that tries once at a time (SingleTry).
func RetryAfter(resp *http.Response) time.Duration {
	if s, err := strconv.Atoi(strings.TrimSpace(resp.Header.Get("Retry-After"))); err == nil && s >= 0 {
		return max(time.Duration(s)*time.Second, time.Millisecond)
	}
	if t, err := http.ParseTime(resp.Header.Get("Retry-After")); err == nil {
		return max(time.Until(t), time.Millisecond)
	}
	return time.Second
}

// bearer adds a client-credentials token to every request and gets a new
// one when the service says the token is no longer good.
type bearer struct {
	cfg         *clientcredentials.Config
	base        http.RoundTripper
	header      http.Header
	tokenClient *http.Client
	mu          sync.Mutex
	tok         *oauth2.Token
}

// errToken keeps a token endpoint's failure recognisable; its text never
// holds the secret (the oauth2 package reports the server's answer only).
// errCredentials marks the failures no retry can mend (a 4xx answer).
var (
	errToken       = errors.New("getting an access token")
	errCredentials = errors.New("the credentials were refused")
)

func (b *bearer) token(ctx context.Context, stale *oauth2.Token) (*oauth2.Token, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.tok != nil && b.tok.Valid() && b.tok != stale {
		return b.tok, nil
	}
	tok, err := b.cfg.Token(context.WithValue(ctx, oauth2.HTTPClient, b.tokenClient))
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) {
			// Entra's error_description names the problem ("AADSTS7000215:
			// Invalid client secret provided…"); it never holds the secret.
			why := strings.TrimSpace(re.ErrorCode + ": " + firstLine(re.ErrorDescription))
			why = strings.TrimSuffix(why, ":")
			if re.Response.StatusCode >= 400 && re.Response.StatusCode < 500 {
				return nil, fmt.Errorf("%w from %s: %s %s (%w)", errToken, b.cfg.TokenURL, re.Response.Status, why, errCredentials)
			}
			return nil, fmt.Errorf("%w from %s: %s %s", errToken, b.cfg.TokenURL, re.Response.Status, why)
		}
		return nil, fmt.Errorf("%w from %s: %v", errToken, b.cfg.TokenURL, extract.Unquery(err))
	}
	b.tok = tok
	return tok, nil
}

// firstLine is a message's first line: Entra's descriptions go on with
// trace and correlation ids and a timestamp.
func firstLine(s string) string {
	line, _, _ := strings.Cut(strings.ReplaceAll(s, "\r\n", "\n"), "\n")
	return strings.TrimSpace(line)
}

func (b *bearer) RoundTrip(req *http.Request) (*http.Response, error) {
	// The body may be needed twice; API request bodies are small.
	var body []byte
	if req.Body != nil {
		var err error
		body, err = io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, err
		}
	}
	tok, err := b.token(req.Context(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := b.base.RoundTrip(b.authorize(req, tok, body))
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		return resp, err
	}
	// 401: the token expired early or was revoked. One more try with a new one.
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if tok, err = b.token(req.Context(), tok); err != nil {
		return nil, err
	}
	return b.base.RoundTrip(b.authorize(req, tok, body))
}

func (b *bearer) authorize(req *http.Request, tok *oauth2.Token, body []byte) *http.Request {
	r := req.Clone(req.Context())
	r.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	for k, v := range b.header {
		r.Header[k] = v
	}
	if body != nil {
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.ContentLength = int64(len(body))
	}
	return r
}

// triesText counts a request's tries for its error.
func triesText(n int) string {
	if n == 1 {
		return "1 try"
	}
	return fmt.Sprintf("%d tries", n)
}

// ErrNotSent marks a request the HTTP client gave up on while it waited
// out throttling (a 429 or 503, which say the request did not run): its
// outcome is known, nothing to read back.
var ErrNotSent = errors.New("not sent: the service was throttling it when the run stopped")

type unrepeatable struct{}

// Unrepeatable returns a context whose request must not be sent again after
// a failure that leaves its outcome unknown (a connection lost after
// sending, a 5xx other than 503): a $batch may have been applied, and
// sending it again would meet its own changed ETags. The writer reads the
// records back instead.
func Unrepeatable(ctx context.Context) context.Context {
	return context.WithValue(ctx, unrepeatable{}, true)
}

func isUnrepeatable(ctx context.Context) bool { return ctx.Value(unrepeatable{}) != nil }

// singleTry marks a request the HTTP client must send once: its caller
// decides what a failure means and when to try again.
type singleTry struct{}

// SingleTry returns a context whose requests the API client does not
// retry by itself.
func SingleTry(ctx context.Context) context.Context { return context.WithValue(ctx, singleTry{}, true) }

func isSingleTry(ctx context.Context) bool { v, _ := ctx.Value(singleTry{}).(bool); return v }
