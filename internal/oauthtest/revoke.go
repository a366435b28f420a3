package oauthtest

import (
	"net/http"
	"sync"
)

// RevokePath is the path of the server's RFC 7009 revocation endpoint:
// URL + RevokePath is what a client configures as its revocation URL.
const RevokePath = "/revoke"

// revocation is the state of the revocation endpoint.
type revocation struct {
	mu      sync.Mutex
	revoked []string // tokens revoked, in order
	refuse  string   // when set: answer this OAuth error (HTTP 400)
	status  int      // when set: answer this status with no body
}

// Revoked lists the tokens the revocation endpoint revoked, in order.
func (s *Server) Revoked() []string {
	s.rev.mu.Lock()
	defer s.rev.mu.Unlock()
	return append([]string(nil), s.rev.revoked...)
}

// RefuseRevocation makes the revocation endpoint answer HTTP 400 with
// errCode (RFC 7009 section 2.2.1: unsupported_token_type), or, with
// status non-zero, that bare status (503: try later). "" and 0 restore it.
func (s *Server) RefuseRevocation(errCode string, status int) {
	s.rev.mu.Lock()
	defer s.rev.mu.Unlock()
	s.rev.refuse, s.rev.status = errCode, status
}

// serveRevoke is RFC 7009 section 2: a POST with token (and an optional
// token_type_hint), the client authenticated as at the token endpoint. A
// revoked refresh token can no longer be redeemed. Any token, known or
// not, gets 200 (section 2.2).
func (s *Server) serveRevoke(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", http.StatusBadRequest)
		return
	}
	req := Request{Form: r.PostForm}
	req.BasicUser, req.BasicPass, req.HasBasic = r.BasicAuth()
	s.rev.mu.Lock()
	refuse, status := s.rev.refuse, s.rev.status
	s.rev.mu.Unlock()
	switch {
	case status != 0:
		w.WriteHeader(status)
		return
	case refuse != "":
		WriteError(w, http.StatusBadRequest, refuse, "revocation refused by the test")
		return
	}
	client, ok := s.clientAuthenticated(w, req)
	if !ok {
		return
	}
	tok := r.PostForm.Get("token")
	if tok == "" {
		WriteError(w, http.StatusBadRequest, "invalid_request", "token is required")
		return
	}
	s.mu.Lock()
	g := s.grantOf(tok)
	if g != nil && g.client != "" && g.client != client {
		s.mu.Unlock()
		// Section 2.1: the server verifies the token was issued to the
		// client making the request, and refuses it otherwise.
		WriteError(w, http.StatusBadRequest, "unauthorized_client", "the token was issued to another client")
		return
	}
	delete(s.refresh, tok)
	s.mu.Unlock()
	s.rev.mu.Lock()
	s.rev.revoked = append(s.rev.revoked, tok)
	s.rev.mu.Unlock()
	w.WriteHeader(http.StatusOK)
}

// grantOf is the grant tok was issued from, nil for a token the server
// does not know. The caller holds mu.
func (s *Server) grantOf(tok string) *grant {
	if rt := s.refresh[tok]; rt != nil {
		return rt.grant
	}
	if at := s.access[tok]; at != nil {
		return at.grant
	}
	return nil
}
