package crashtest

import (
	"time"

	"flowd.local/flowd/states"
)

// The API's JSON shapes, as a client outside flowd's module tree sees
// them (cmd/internal/wire is internal to cmd). Declaring them here also
// makes the crash test a check of the wire contract: a renamed field
// breaks it.

// The error codes the crash test tells apart.
const (
	codeExchangeInProgress = "exchange_in_progress"
	codeFlowFinished       = "flow_finished"
	codeFlowExpired        = "flow_expired"
)

type startRequest struct {
	Provider  string   `json:"provider"`
	Scopes    []string `json:"scopes,omitempty"`
	Transport string   `json:"transport,omitempty"`
	TTL       string   `json:"ttl,omitempty"`
	Principal string   `json:"principal,omitempty"`
}

type startResponse struct {
	State       string    `json:"state"`
	AuthURL     string    `json:"auth_url"`
	RedirectURI string    `json:"redirect_uri"`
	ExpiresAt   time.Time `json:"expires_at"`
	Superseded  []string  `json:"superseded"`
}

type flowJSON struct {
	State            string    `json:"state"`
	Status           string    `json:"status"`
	Terminal         bool      `json:"terminal"`
	Reason           string    `json:"reason"`
	Exchanging       bool      `json:"exchanging"`
	Message          string    `json:"message"`
	ErrorCode        string    `json:"error_code"`
	HTTPStatus       int       `json:"http_status"`
	ExpiresAt        time.Time `json:"expires_at"`
	IgnoredCallbacks int       `json:"ignored_callbacks"`
	TokenStored      bool      `json:"token_stored"`
}

type listResponse struct {
	Flows []flowJSON `json:"flows"`
}

type historyResponse struct {
	State   string          `json:"state"`
	Records []states.Record `json:"records"`
}

type callbackRequest struct {
	URL              string `json:"url,omitempty"`
	State            string `json:"state,omitempty"`
	Code             string `json:"code,omitempty"`
	Error            string `json:"error,omitempty"`
	ErrorDescription string `json:"error_description,omitempty"`
}

type callbackResponse struct {
	Outcome string   `json:"outcome"`
	Message string   `json:"message"`
	Flow    flowJSON `json:"flow"`
}

type errorBody struct {
	Err struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}
