package broker

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"
)

func init() {
	// Milliseconds: zerolog's default time format stops at seconds. It is
	// a package-wide setting, so it is made once, here.
	zerolog.TimeFieldFormat = "2006-01-02T15:04:05.000Z07:00"
}

func parseLevel(s string) (zerolog.Level, error) {
	if s == "" {
		return zerolog.InfoLevel, nil
	}
	l, err := zerolog.ParseLevel(strings.ToLower(s))
	if err != nil || l == zerolog.NoLevel {
		return 0, fmt.Errorf("%q must be one of trace, debug, info, warn, error", s)
	}
	return l, nil
}

// NewLogger builds the zerolog logger a Log section describes.
func NewLogger(c Log, w io.Writer) zerolog.Logger {
	if w == nil {
		w = os.Stderr
	}
	level, _ := parseLevel(c.Level)
	console := c.Format == "console"
	if c.Format == "" {
		if f, ok := w.(*os.File); ok && isatty.IsTerminal(f.Fd()) {
			console = true
		}
	}
	if console {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: "15:04:05.000"}
	}
	return zerolog.New(w).Level(level).With().Timestamp().Logger()
}

// privateKeys are slog attribute keys mochi uses for whole packets, whose
// payloads are private messages, and anything that could hold a secret.
var privateKeys = map[string]bool{"pk": true, "packet": true, "payload": true, "password": true, "will": true}

// privacyHandler drops private attributes before they reach the log.
type privacyHandler struct{ next slog.Handler }

func newSlog(l zerolog.Logger) *slog.Logger {
	return slog.New(privacyHandler{zerolog.NewSlogHandler(l)})
}

func (h privacyHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.next.Enabled(ctx, l)
}

func (h privacyHandler) Handle(ctx context.Context, r slog.Record) error {
	clean := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	r.Attrs(func(a slog.Attr) bool {
		if !privateKeys[strings.ToLower(a.Key)] {
			clean.AddAttrs(a)
		}
		return true
	})
	return h.next.Handle(ctx, clean)
}

func (h privacyHandler) WithAttrs(as []slog.Attr) slog.Handler {
	kept := make([]slog.Attr, 0, len(as))
	for _, a := range as {
		if !privateKeys[strings.ToLower(a.Key)] {
			kept = append(kept, a)
		}
	}
	return privacyHandler{h.next.WithAttrs(kept)}
}

func (h privacyHandler) WithGroup(name string) slog.Handler {
	return privacyHandler{h.next.WithGroup(name)}
}
