{{/* The components this release runs and the gRPC service each one's health is checked for. */}}
{{- define "ucadi-site.healthChecks" -}}
{{- $checks := list }}
{{- if .Values.trainer.enabled }}
{{- $checks = append $checks (dict "component" "trainer" "service" .Values.trainer.healthService) }}
{{- end }}
{{- if .Values.inference.enabled }}
{{- $checks = append $checks (dict "component" "inference" "service" .Values.inference.healthService) }}
{{- end }}
{{- toJson $checks }}
{{- end }}
