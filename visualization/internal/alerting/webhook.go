package alerting

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"sync/atomic"
	"time"
)

// WebhookOptions configure webhook delivery; zero fields take the defaults.
type WebhookOptions struct {
	QueueSize   int           // notifications waiting at most; default 256
	MaxAttempts int           // tries per notification; default 5
	Backoff     time.Duration // wait before the first retry, doubling; default 1 s
	MaxBackoff  time.Duration // longest wait between tries; default 30 s
	Timeout     time.Duration // one POST; default 5 s
	Client      *http.Client  // nil: a client with no redirects followed
	Logger      *slog.Logger  // nil: slog.Default()
}

// Notification is the JSON body POSTed to a rule's webhook: the alert as
// it fired or resolved ("state" is "firing" or "resolved").
type Notification struct {
	Alert
}

type notification struct {
	url  string
	body Alert
}

type notifier struct {
	opts  WebhookOptions
	queue chan notification

	sent, retries, failed, dropped atomic.Uint64
}

type notifierStats struct{ sent, retries, failed, dropped uint64 }

func newNotifier(o WebhookOptions) (*notifier, error) {
	if o.QueueSize == 0 {
		o.QueueSize = 256
	}
	if o.MaxAttempts == 0 {
		o.MaxAttempts = 5
	}
	if o.Backoff == 0 {
		o.Backoff = time.Second
	}
	if o.MaxBackoff == 0 {
		o.MaxBackoff = 30 * time.Second
	}
	if o.Timeout == 0 {
		o.Timeout = 5 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Client == nil {
		o.Client = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	if o.QueueSize < 1 || o.MaxAttempts < 1 || o.Backoff < 0 || o.MaxBackoff < o.Backoff || o.Timeout < 0 {
		return nil, fmt.Errorf("alerting: webhook queue %d, attempts %d, backoff %s..%s, timeout %s: want positive sizes and backoff <= max backoff",
			o.QueueSize, o.MaxAttempts, o.Backoff, o.MaxBackoff, o.Timeout)
	}
	return &notifier{opts: o, queue: make(chan notification, o.QueueSize)}, nil
}

// enqueue never blocks: a full queue drops n and counts it.
func (n *notifier) enqueue(x notification) {
	select {
	case n.queue <- x:
	default:
		n.dropped.Add(1)
	}
}

// run delivers notifications in order until ctx ends; what is left in the
// queue then is counted as dropped.
func (n *notifier) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			for {
				select {
				case <-n.queue:
					n.dropped.Add(1)
				default:
					return
				}
			}
		case x := <-n.queue:
			n.deliver(ctx, x)
		}
	}
}

// deliver POSTs x, retrying network errors, 429 and 5xx with backoff.
func (n *notifier) deliver(ctx context.Context, x notification) {
	body, err := json.Marshal(Notification{Alert: x.body})
	if err != nil {
		n.failed.Add(1)
		return
	}
	wait := n.opts.Backoff
	for attempt := 1; ; attempt++ {
		retry, err := n.post(ctx, x.url, body)
		if err == nil {
			n.sent.Add(1)
			return
		}
		if !retry || attempt >= n.opts.MaxAttempts || ctx.Err() != nil {
			n.failed.Add(1)
			// The URL may carry a token: log the rule, never the URL.
			n.opts.Logger.Warn("alert webhook failed", "rule", x.body.RuleID, "state", x.body.State, "attempts", attempt, "err", err)
			return
		}
		n.retries.Add(1)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			n.failed.Add(1)
			return
		case <-t.C:
		}
		wait = min(2*wait, n.opts.MaxBackoff)
	}
}

// post makes one attempt; retry says whether another may succeed.
func (n *notifier) post(ctx context.Context, url string, body []byte) (retry bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, n.opts.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return false, fmt.Errorf("build webhook request: %w", redactErr(err))
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "monitor-alerting/1")
	resp, err := n.opts.Client.Do(req)
	if err != nil {
		return true, fmt.Errorf("post webhook: %w", redactErr(err))
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return false, nil
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		return true, fmt.Errorf("webhook answered %s", resp.Status)
	default:
		return false, fmt.Errorf("webhook answered %s", resp.Status)
	}
}

// redactErr drops the URL from a *url.Error (it may carry a token).
func redactErr(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("%s: %w", ue.Op, ue.Err)
	}
	return err
}

func (n *notifier) stats() notifierStats {
	return notifierStats{sent: n.sent.Load(), retries: n.retries.Load(), failed: n.failed.Load(), dropped: n.dropped.Load()}
}
