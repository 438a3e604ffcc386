{{/*
Helpers of the central chart only; names, labels, the image, probes, the common environment and
scrape annotations come from the ucadi-common library chart (charts/ucadi-common).
*/}}

{{/* Name of a component's TLS Secret; call with (dict "ctx" $ "component" "crypto" "secret" "..."). */}}
{{- define "ucadi-central.tlsSecret" -}}
{{- default (printf "%s-%s-tls" (include "ucadi.fullname" .ctx) .component) .secret }}
{{- end }}

{{/* The headless Service governing the crypto StatefulSet (stable per-replica DNS names). */}}
{{- define "ucadi-central.cryptoHeadless" -}}
{{- printf "%s-crypto-replicas" (include "ucadi.fullname" .) }}
{{- end }}

{{/* Sites reach both public gRPC ports; empty siteCIDRs means any source (mTLS authenticates). */}}
{{- define "ucadi-central.siteSources" -}}
{{- range .Values.networkPolicy.siteCIDRs }}
- ipBlock:
    cidr: {{ . }}
{{- end }}
{{- end }}
