{{/*
Names, labels and the few values several templates share.
*/}}

{{- define "mlbench.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "mlbench.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "mlbench.labels" -}}
{{ include "mlbench.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The fixed UID/GID of the image's non-root user (docker/Dockerfile's MLBENCH_UID). */}}
{{- define "mlbench.uid" -}}10001{{- end -}}

{{/* The port `mlbench serve` listens on inside the pod (docker/Dockerfile EXPOSE). */}}
{{- define "mlbench.containerPort" -}}8000{{- end -}}

{{- define "mlbench.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository .Values.image.tag -}}
{{- end -}}
{{- end -}}

{{- define "mlbench.runsNamespace" -}}
{{- default .Release.Namespace .Values.runs.namespace -}}
{{- end -}}

{{- define "mlbench.masterServiceAccount" -}}{{ include "mlbench.fullname" . }}-master{{- end -}}
{{- define "mlbench.workerServiceAccount" -}}{{ include "mlbench.fullname" . }}-worker{{- end -}}

{{/* The restricted pod-level securityContext every pod of the chart uses. */}}
{{- define "mlbench.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ include "mlbench.uid" . }}
runAsGroup: {{ include "mlbench.uid" . }}
fsGroup: {{ include "mlbench.uid" . }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The restricted container-level securityContext every container of the chart uses. */}}
{{- define "mlbench.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ include "mlbench.uid" . }}
runAsGroup: {{ include "mlbench.uid" . }}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}
