package broker_test

import (
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/imqtt/imqtt/broker"
)

// examplePath is the commented configuration the README points to.
const examplePath = "../testdata/imqtt.example.yaml"

// TestExampleConfigIsDefault keeps the documented example honest: loading it
// must give exactly broker.Default(), so a changed default shows up here
// instead of in a user's surprise.
func TestExampleConfigIsDefault(t *testing.T) {
	got, err := broker.LoadConfigFile(examplePath)
	if err != nil {
		t.Fatalf("LoadConfigFile(%s): %v", examplePath, err)
	}
	want := broker.Default()
	got.LogWriter, want.LogWriter = nil, nil
	emptySlicesToNil(reflect.ValueOf(&got).Elem())
	emptySlicesToNil(reflect.ValueOf(&want).Elem())
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s differs from broker.Default():\n got  %+v\n want %+v", examplePath, got, want)
	}
}

// TestExampleConfigNamesEveryKey catches a key added to broker.Config but not
// documented in the example: loading alone would not, since a missing key
// silently keeps its default.
func TestExampleConfigNamesEveryKey(t *testing.T) {
	b, err := os.ReadFile(examplePath)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("%s: %v", examplePath, err)
	}
	keys := yamlKeys(reflect.TypeOf(broker.Config{}), "")
	if len(keys) < 20 {
		t.Fatalf("found only %d keys in broker.Config (%v); the reflection walk is broken", len(keys), keys)
	}
	for _, k := range keys {
		if !hasKey(doc, k) {
			t.Errorf("%s does not set %s", examplePath, k)
		}
	}
}

// TestExampleConfigCheckCatchesDrift proves the two checks above can fail: a
// changed value and a missing key must both be noticed.
func TestExampleConfigCheckCatchesDrift(t *testing.T) {
	b, err := os.ReadFile(examplePath)
	if err != nil {
		t.Fatal(err)
	}
	changed := strings.Replace(string(b), "max_keepalive: 300", "max_keepalive: 301", 1)
	if changed == string(b) {
		t.Fatal("example has no line \"max_keepalive: 300\" to change")
	}
	c, err := broker.ParseConfig([]byte(changed))
	if err != nil {
		t.Fatal(err)
	}
	if c.MaxKeepalive == broker.Default().MaxKeepalive {
		t.Error("a changed value in the example still loads as the default")
	}

	var doc map[string]any
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	delete(doc["backlog"].(map[string]any), "max_age")
	if hasKey(doc, "backlog.max_age") {
		t.Error("hasKey finds a key that was removed")
	}
}

var durationType = reflect.TypeOf(time.Duration(0))

// yamlKeys lists the dotted YAML keys of a struct type, leaves only.
func yamlKeys(t reflect.Type, prefix string) []string {
	var keys []string
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		if f.Type.Kind() == reflect.Struct && f.Type != durationType {
			keys = append(keys, yamlKeys(f.Type, prefix+name+".")...)
			continue
		}
		keys = append(keys, prefix+name)
	}
	return keys
}

func hasKey(doc map[string]any, dotted string) bool {
	parts := strings.Split(dotted, ".")
	m := doc
	for i, p := range parts {
		v, ok := m[p]
		if !ok {
			return false
		}
		if i == len(parts)-1 {
			return true
		}
		if m, ok = v.(map[string]any); !ok {
			return false
		}
	}
	return false
}

// emptySlicesToNil makes `key: []` in YAML compare equal to a nil default.
func emptySlicesToNil(v reflect.Value) {
	switch v.Kind() {
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				emptySlicesToNil(v.Field(i))
			}
		}
	case reflect.Slice:
		if v.Len() == 0 && v.CanSet() {
			v.Set(reflect.Zero(v.Type()))
		}
	}
}
