{{/* The components this release runs and the gRPC service each one's health is checked for. */}}
{{- define "ucadi-central.healthChecks" -}}
{{- $checks := list (dict "component" "aggregator" "service" .Values.aggregator.healthService) }}
{{- if gt (int .Values.crypto.replicas) 0 }}
{{- $checks = append $checks (dict "component" "crypto" "service" .Values.crypto.healthService) }}
{{- end }}
{{- toJson $checks }}
{{- end }}
