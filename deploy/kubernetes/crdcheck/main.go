// crdcheck validates the KEDA and Prometheus-operator objects of a rendered kustomize overlay
// against those projects' own Go API types (github.com/kedacore/keda/v2/apis/keda/v1alpha1,
// github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1), fetched as Go
// modules. Each object is decoded strictly: an unknown or misspelt field, or a value of the
// wrong type, is an error. A few rules the CRDs enforce beyond types are checked as well.
//
// Usage: kustomize build deploy/kubernetes/overlays/prod | crdcheck
// Prints one line per object checked; exits 1 naming every object that fails.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	kedav1alpha1 "github.com/kedacore/keda/v2/apis/keda/v1alpha1"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"sigs.k8s.io/yaml"
)

type typeMeta struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name string `json:"name"`
	} `json:"metadata"`
}

func main() {
	data, err := io.ReadAll(bufio.NewReader(os.Stdin))
	if err != nil {
		fmt.Fprintln(os.Stderr, "crdcheck: reading stdin:", err)
		os.Exit(2)
	}
	failed := 0
	checked := 0
	for _, doc := range splitDocuments(data) {
		var meta typeMeta
		if err := yaml.Unmarshal(doc, &meta); err != nil {
			fmt.Fprintln(os.Stderr, "crdcheck: not YAML:", err)
			failed++
			continue
		}
		check, known := checks[meta.APIVersion+"/"+meta.Kind]
		if !known {
			continue
		}
		checked++
		name := fmt.Sprintf("%s %s/%s", meta.APIVersion, meta.Kind, meta.Metadata.Name)
		if err := check(doc); err != nil {
			fmt.Printf("FAIL %s: %v\n", name, err)
			failed++
		} else {
			fmt.Printf("ok   %s\n", name)
		}
	}
	if checked == 0 {
		fmt.Fprintln(os.Stderr, "crdcheck: no KEDA or Prometheus-operator object in the input")
		os.Exit(1)
	}
	if failed > 0 {
		os.Exit(1)
	}
}

func splitDocuments(data []byte) [][]byte {
	var out [][]byte
	for _, part := range bytes.Split(data, []byte("\n---")) {
		if len(bytes.TrimSpace(part)) > 0 {
			out = append(out, part)
		}
	}
	return out
}

// strict decodes YAML into out, refusing unknown fields.
func strict(doc []byte, out any) error {
	js, err := yaml.YAMLToJSON(doc)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	return dec.Decode(out)
}

var checks = map[string]func([]byte) error{
	"keda.sh/v1alpha1/ScaledObject":           checkScaledObject,
	"keda.sh/v1alpha1/TriggerAuthentication":  checkTriggerAuthentication,
	"monitoring.coreos.com/v1/ServiceMonitor": checkServiceMonitor,
	"monitoring.coreos.com/v1/PodMonitor":     checkPodMonitor,
	"monitoring.coreos.com/v1/PrometheusRule": checkPrometheusRule,
}

func checkScaledObject(doc []byte) error {
	var so kedav1alpha1.ScaledObject
	if err := strict(doc, &so); err != nil {
		return err
	}
	var errs []error
	if so.Spec.ScaleTargetRef == nil || so.Spec.ScaleTargetRef.Name == "" {
		errs = append(errs, errors.New("spec.scaleTargetRef.name is required"))
	}
	if len(so.Spec.Triggers) == 0 {
		errs = append(errs, errors.New("spec.triggers must not be empty"))
	}
	if so.Spec.MinReplicaCount != nil && so.Spec.MaxReplicaCount != nil &&
		*so.Spec.MinReplicaCount > *so.Spec.MaxReplicaCount {
		errs = append(errs, errors.New("minReplicaCount above maxReplicaCount"))
	}
	for i, t := range so.Spec.Triggers {
		if t.Type == "" {
			errs = append(errs, fmt.Errorf("spec.triggers[%d].type is required", i))
		}
		if t.Type == "kafka" {
			for _, key := range []string{"bootstrapServers", "consumerGroup", "topic"} {
				if t.Metadata[key] == "" {
					errs = append(errs, fmt.Errorf("spec.triggers[%d].metadata.%s is required", i, key))
				}
			}
		}
	}
	if v, ok := so.Annotations["autoscaling.keda.sh/paused-replicas"]; ok && strings.TrimSpace(v) == "" {
		errs = append(errs, errors.New("paused-replicas annotation is empty"))
	}
	return errors.Join(errs...)
}

func checkTriggerAuthentication(doc []byte) error {
	var ta kedav1alpha1.TriggerAuthentication
	if err := strict(doc, &ta); err != nil {
		return err
	}
	var errs []error
	for i, ref := range ta.Spec.SecretTargetRef {
		if ref.Parameter == "" || ref.Name == "" || ref.Key == "" {
			errs = append(errs, fmt.Errorf("spec.secretTargetRef[%d]: parameter, name and key are required", i))
		}
	}
	return errors.Join(errs...)
}

func checkServiceMonitor(doc []byte) error {
	var sm monitoringv1.ServiceMonitor
	if err := strict(doc, &sm); err != nil {
		return err
	}
	if len(sm.Spec.Endpoints) == 0 {
		return errors.New("spec.endpoints must not be empty")
	}
	for i, e := range sm.Spec.Endpoints {
		if (e.Port == "") == (e.TargetPort == nil) {
			return fmt.Errorf("spec.endpoints[%d]: exactly one of port or targetPort", i)
		}
	}
	return nil
}

func checkPodMonitor(doc []byte) error {
	var pm monitoringv1.PodMonitor
	return strict(doc, &pm)
}

// checkPrometheusRule: the expressions themselves are checked by `promtool check rules` on
// deploy/prometheus/alerts.yml, of which this object is a copy (tests/observability.rs).
func checkPrometheusRule(doc []byte) error {
	var pr monitoringv1.PrometheusRule
	if err := strict(doc, &pr); err != nil {
		return err
	}
	var errs []error
	if len(pr.Spec.Groups) == 0 {
		errs = append(errs, errors.New("spec.groups must not be empty"))
	}
	for _, g := range pr.Spec.Groups {
		for _, r := range g.Rules {
			name := r.Alert + r.Record
			if (r.Alert == "") == (r.Record == "") {
				errs = append(errs, fmt.Errorf("group %s: a rule needs exactly one of alert or record", g.Name))
			}
			if strings.TrimSpace(r.Expr.String()) == "" {
				errs = append(errs, fmt.Errorf("rule %s: expr is required", name))
			}
		}
	}
	return errors.Join(errs...)
}
