module github.com/flowdhq/flowd/internal/identity

go 1.26.0

require (
	github.com/coreos/go-oidc/v3 v3.21.0
	github.com/flowdhq/flowd v0.0.0-00010101000000-000000000000
	github.com/go-jose/go-jose/v4 v4.1.4
	github.com/stretchr/testify v1.12.1
	golang.org/x/oauth2 v0.38.0
)

require (
	github.com/looplab/fsm v1.0.3 // indirect
	go.yaml.in/yaml/v3 v3.0.5 // indirect
)
