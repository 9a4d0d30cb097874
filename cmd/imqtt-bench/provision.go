package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/imqtt/imqtt"
	"github.com/imqtt/imqtt/auth"
	"github.com/imqtt/imqtt/storage"
	"github.com/imqtt/imqtt/storage/bolt"
)

// edge is a friendship to make.
type edge struct{ a, b int }

// edges lists the friendships of a provisioning: pairs (2i, 2i+1) unless
// turned off, and user 0 with 1..star-1.
func (o *options) edges() []edge {
	var es []edge
	if !o.noPairFriends {
		for i := 0; i+1 < o.users; i += 2 {
			es = append(es, edge{i, i + 1})
		}
	}
	for j := 1; j < o.star; j++ {
		if j == 1 && !o.noPairFriends {
			continue // pair 0 already
		}
		es = append(es, edge{0, j})
	}
	return es
}

func provision(o *options, w io.Writer) error {
	if o.store != "" {
		return provisionStore(o, w)
	}
	return provisionAdmin(o, w)
}

// tokenSink collects "user token" lines for --tokens-out.
type tokenSink struct {
	mu    sync.Mutex
	lines []string
}

func (s *tokenSink) add(user, token string) {
	s.mu.Lock()
	s.lines = append(s.lines, user+" "+token)
	s.mu.Unlock()
}

func (s *tokenSink) write(path string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return os.WriteFile(path, []byte(strings.Join(s.lines, "\n")+"\n"), 0o600)
}

// provisionStore writes users, friendships and tokens straight into a store
// no broker holds open.
func provisionStore(o *options, w io.Writer) error {
	if !o.realCost {
		// Cost 10 for 10,000 users is minutes of CPU; the broker checks a
		// hash at the cost it was made with, so logins get cheaper too.
		auth.SetTestCost()
	}
	db, err := bolt.OpenDir(o.store, bolt.Options{})
	if err != nil {
		return err
	}
	defer db.Close()
	t0 := time.Now()
	var shared []byte
	if o.samePassword != "" {
		if shared, err = auth.HashPassword(o.samePassword); err != nil {
			return err
		}
	}
	var created, existed atomic.Int64
	_, err = forEach(o.users, 2*runtime.GOMAXPROCS(0), func(i int) error {
		id := o.user(i)
		h := shared
		if h == nil {
			var err error
			if h, err = auth.HashPassword(o.passPrefix + id); err != nil {
				return err
			}
		}
		err := db.CreateUser(storage.User{ID: id, Role: imqtt.RoleUser, Hash: h})
		switch {
		case errors.Is(err, imqtt.ErrExists):
			existed.Add(1)
		case err != nil:
			return err
		default:
			created.Add(1)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("users: %w", err)
	}
	es := o.edges()
	ts := time.Now().UnixMilli()
	for len(es) > 0 {
		chunk := es[:min(len(es), 2000)]
		es = es[len(chunk):]
		err := db.Update(func(tx storage.Tx) error {
			for _, e := range chunk {
				if err := tx.SetFriends(o.user(e.a), o.user(e.b), ts); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("friendships: %w", err)
		}
	}
	if o.tokensOut != "" {
		var sink tokenSink
		_, err := forEach(o.users, 8, func(i int) error {
			tid, token, hash, err := auth.NewToken()
			if err != nil {
				return err
			}
			if err := db.CreateToken(storage.Token{ID: tid, User: o.user(i), Name: "bench", Hash: hash}); err != nil {
				return err
			}
			sink.add(o.user(i), token)
			return nil
		})
		if err != nil {
			return fmt.Errorf("tokens: %w", err)
		}
		if err := sink.write(o.tokensOut); err != nil {
			return err
		}
	}
	fmt.Fprintf(w, "provisioned %s: %d users created, %d already there, %d friendships, tokens: %v, in %.1f s\n",
		o.store, created.Load(), existed.Load(), len(o.edges()), o.tokensOut != "", time.Since(t0).Seconds())
	return nil
}

// provisionAdmin creates users and tokens over the admin HTTP API and
// friendships over MQTT, with each side requesting the other.
func provisionAdmin(o *options, w io.Writer) error {
	base := strings.TrimRight(o.admin, "/")
	if _, err := url.Parse(base); err != nil {
		return fmt.Errorf("--admin: %w", err)
	}
	hc := &http.Client{Timeout: 2 * time.Minute}
	call := func(method, path string, body any, want int, out any) (int, error) {
		b, _ := json.Marshal(body)
		req, err := http.NewRequest(method, base+path, bytes.NewReader(b))
		if err != nil {
			return 0, err
		}
		req.SetBasicAuth(o.adminUser, o.adminPassword)
		req.Header.Set("Content-Type", "application/json")
		resp, err := hc.Do(req)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if resp.StatusCode != want {
			return resp.StatusCode, fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, bytes.TrimSpace(data))
		}
		if out != nil {
			return resp.StatusCode, json.Unmarshal(data, out)
		}
		return resp.StatusCode, nil
	}
	t0 := time.Now()
	var created, existed atomic.Int64
	// The broker hashes each password at its real cost: a few at a time
	// is all its cores can do anyway.
	_, err := forEach(o.users, 2*runtime.GOMAXPROCS(0), func(i int) error {
		id := o.user(i)
		code, err := call("POST", "/v1/users", map[string]string{"user": id, "password": o.password(id, nil)}, http.StatusCreated, nil)
		switch {
		case code == http.StatusConflict:
			existed.Add(1)
		case err != nil:
			return err
		default:
			created.Add(1)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("users: %w", err)
	}
	if o.tokensOut != "" {
		var sink tokenSink
		_, err := forEach(o.users, 8, func(i int) error {
			var tok struct{ Token string }
			if _, err := call("POST", "/v1/users/"+o.user(i)+"/tokens", map[string]string{"name": "bench"}, http.StatusCreated, &tok); err != nil {
				return err
			}
			sink.add(o.user(i), tok.Token)
			return nil
		})
		if err != nil {
			return fmt.Errorf("tokens: %w", err)
		}
		if err := sink.write(o.tokensOut); err != nil {
			return err
		}
	}
	if err := friendsOverMQTT(o); err != nil {
		return fmt.Errorf("friendships: %w", err)
	}
	fmt.Fprintf(w, "provisioned %s: %d users created, %d already there, %d friendships, tokens: %v, in %.1f s\n",
		base, created.Load(), existed.Load(), len(o.edges()), o.tokensOut != "", time.Since(t0).Seconds())
	return nil
}

// friendsOverMQTT makes every edge a friendship: a requests b, then b
// requests a, which PROTOCOL.md section 5 turns into a friendship at once.
func friendsOverMQTT(o *options) error {
	es := o.edges()
	if len(es) == 0 {
		return nil
	}
	out := map[int][]int{} // requester -> users it requests, phase 1
	back := map[int][]int{}
	for _, e := range es {
		out[e.a] = append(out[e.a], e.b)
		back[e.b] = append(back[e.b], e.a)
	}
	cs := &clientSet{}
	for _, phase := range []map[int][]int{out, back} {
		users := make([]int, 0, len(phase))
		for u := range phase {
			users = append(users, u)
		}
		if _, err := forEach(len(users), 50, func(k int) error {
			u := users[k]
			me := o.user(u)
			r, err := o.newRequester(cs, me, me+"-prov", nil, nil)
			if err != nil {
				return err
			}
			defer r.c.Disconnect(50)
			for _, v := range phase[u] {
				for {
					res, err := r.do(map[string]any{"op": "friend.request", "user": o.user(v)})
					if err != nil && res.Error.Code == "rate_limited" {
						time.Sleep(100 * time.Millisecond)
						continue
					}
					if err != nil {
						return err
					}
					break
				}
			}
			return nil
		}); err != nil {
			return err
		}
	}
	return nil
}
