{{/*
Helpers of the site chart only; names, labels, the image, probes, the common environment and
scrape annotations come from the ucadi-common library chart (charts/ucadi-common).
*/}}

{{/* The trainer's image: the CUDA variant (Dockerfile.gpu, tag suffix -cuda) when it gets a GPU. */}}
{{- define "ucadi-site.trainerImage" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.trainer.gpu.enabled }}
{{- printf "%s:%s-cuda" .Values.image.repository $tag }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* Name of the claim holding published global models (shared by trainer and inference). */}}
{{- define "ucadi-site.modelsClaim" -}}
{{- default (printf "%s-models" (include "ucadi.fullname" .)) .Values.models.persistence.existingClaim }}
{{- end }}

{{/* The startup kit Secret; `ucadi pki kit --k8s-secret` names it ucadi-<site>-tls by default. */}}
{{- define "ucadi-site.tlsSecret" -}}
{{- default (printf "ucadi-%s-tls" .Values.site.name) .Values.tls.secretName }}
{{- end }}

{{/* The port of a HOST:PORT endpoint (the trainer's egress policy opens exactly it). */}}
{{- define "ucadi-site.endpointPort" -}}
{{- $parts := splitList ":" . }}
{{- last $parts | int }}
{{- end }}
