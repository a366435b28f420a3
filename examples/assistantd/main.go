// Command assistantd is a small assistant daemon that embeds flowd's engine
// the way an embedder would, using only its public API: a start route that
// returns the authorization URL and the flow's id, a long-poll status
// route, the loopback redirect, and a token route for the assistant's
// tools. Flows live in a bbolt event log, so a restart mid-flow loses
// nothing: the redirect that arrives after it still completes the flow.
//
//	ASSISTANTD_API_KEY=... ASSISTANTD_CLIENT_SECRET=... assistantd \
//	    -provider github -client-id Iv1.abc -scopes repo \
//	    -auth-url https://github.com/login/oauth/authorize \
//	    -token-url https://github.com/login/oauth/access_token
//
// The client secret and the API key come from the environment, not flags:
// any local user can read a process's arguments.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/flowdhq/flowd/engine"
	"github.com/flowdhq/flowd/persist"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "assistantd:", err)
		os.Exit(1)
	}
}

func run() error {
	dbPath := flag.String("db", "assistantd.db", "event log file; its sealing key is kept beside it (.key)")
	addr := flag.String("addr", "127.0.0.1:8085", "loopback address to serve on; the provider redirects the browser here")
	p := engine.Provider{}
	flag.StringVar(&p.Name, "provider", "github", "provider name, used in the routes")
	flag.StringVar(&p.AuthURL, "auth-url", "", "provider's authorization endpoint")
	flag.StringVar(&p.TokenURL, "token-url", "", "provider's token endpoint")
	flag.StringVar(&p.Issuer, "issuer", "", "provider's issuer identifier, checked against the redirect's iss (RFC 9207)")
	flag.StringVar(&p.ClientID, "client-id", "", "OAuth client id (the secret is read from ASSISTANTD_CLIENT_SECRET)")
	method := flag.String("auth-method", string(engine.AuthMethodClientSecretBasic), "token endpoint auth method: client_secret_basic, client_secret_post or none")
	scopes := flag.String("scopes", "", "comma-separated scopes to ask for")
	flag.Parse()
	p.AuthMethod, p.ClientSecret = engine.AuthMethod(*method), os.Getenv("ASSISTANTD_CLIENT_SECRET")
	if *scopes != "" {
		p.Scopes = strings.Split(*scopes, ",")
	}
	apiKey := os.Getenv("ASSISTANTD_API_KEY")
	if apiKey == "" {
		return errors.New("set ASSISTANTD_API_KEY: the start, status and token routes need it, so no other local user can take a token")
	}

	db, err := persist.Open(*dbPath, persist.Options{})
	if err != nil {
		return err
	}
	defer db.Close()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	if ip := ln.Addr().(*net.TCPAddr).IP; !ip.IsLoopback() {
		return fmt.Errorf("-addr %s is not a loopback address: the token route must not be reachable from the network", *addr)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	e, err := engine.Open(ctx, engine.Config{
		Log: db, Providers: []engine.Provider{p},
		LoopbackRedirectURL: "http://" + ln.Addr().String() + engine.CallbackPath,
	})
	if err != nil {
		return err
	}
	defer e.Close()

	srv := &http.Server{Handler: newHandler(e, apiKey), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shut) // long-polls end with the engine below
	}()
	fmt.Fprintf(os.Stderr, "assistantd: serving on http://%s\n", ln.Addr())
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
