{{/* Names ------------------------------------------------------------------------- */}}

{{- define "gpupool.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's base name: "gpupool" for a release called gpupool, else
RELEASE-gpupool. Alert rules find the scrape jobs by "gpupool-<component>" in it. */}}
{{- define "gpupool.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "gpupool.component" -}}
{{- printf "%s-%s" (include "gpupool.fullname" .root) .component -}}
{{- end -}}

{{- define "gpupool.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "gpupool.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: gpupool
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Labels of one component: (dict "root" $ "component" "webhook") */}}
{{- define "gpupool.componentLabels" -}}
{{ include "gpupool.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "gpupool.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gpupool.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Images ------------------------------------------------------------------------ */}}

{{/* repository:tag, or repository@digest when a digest is given. */}}
{{- define "gpupool.imageRef" -}}
{{- if .image.digest -}}
{{- printf "%s@%s" .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository (toString (default .default .image.tag)) -}}
{{- end -}}
{{- end -}}

{{- define "gpupool.image" -}}
{{- include "gpupool.imageRef" (dict "image" .Values.image "default" .Chart.AppVersion) -}}
{{- end -}}

{{/* The store --------------------------------------------------------------------- */}}

{{- define "gpupool.sqlite" -}}
{{- if eq .Values.store.type "sqlite" }}true{{ end -}}
{{- end -}}

{{- define "gpupool.storeClaim" -}}
{{- default (include "gpupool.component" (dict "root" . "component" "store")) .Values.store.sqlite.existingClaim -}}
{{- end -}}

{{- define "gpupool.storeSecret" -}}
{{- default (include "gpupool.component" (dict "root" . "component" "store")) .Values.store.postgresql.existingSecret -}}
{{- end -}}

{{/* Replicas: an explicit value, else 2 on PostgreSQL and 1 on SQLite. */}}
{{- define "gpupool.replicas" -}}
{{- if kindIs "invalid" .replicas -}}
{{- if include "gpupool.sqlite" .root }}1{{ else }}2{{ end -}}
{{- else -}}
{{- .replicas -}}
{{- end -}}
{{- end -}}

{{/* GPUPOOL_STORE for a container. */}}
{{- define "gpupool.storeEnv" -}}
- name: GPUPOOL_STORE
{{- if include "gpupool.sqlite" . }}
  value: sqlite:////data/gpupool.db
{{- else }}
  valueFrom:
    secretKeyRef:
      name: {{ include "gpupool.storeSecret" . }}
      key: {{ .Values.store.postgresql.existingSecretKey }}
{{- end }}
{{- end -}}

{{- define "gpupool.storeVolumeMount" -}}
{{- if include "gpupool.sqlite" . }}
- name: store
  mountPath: /data
{{- end }}
{{- end -}}

{{- define "gpupool.storeVolume" -}}
{{- if include "gpupool.sqlite" . }}
- name: store
  persistentVolumeClaim:
    claimName: {{ include "gpupool.storeClaim" . }}
{{- end }}
{{- end -}}

{{/* On SQLite every pod that opens the store must run on the webhook's node: a
ReadWriteOnce volume is attached to one node (and SQLite's locks need one kernel). */}}
{{- define "gpupool.affinity" -}}
{{- if and (include "gpupool.sqlite" .root) (ne .component "webhook") }}
affinity:
  podAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      - topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "gpupool.selectorLabels" (dict "root" .root "component" "webhook") | nindent 12 }}
{{- else if .values.affinity }}
affinity:
  {{- toYaml .values.affinity | nindent 2 }}
{{- else if gt (int (include "gpupool.replicas" (dict "root" .root "replicas" .values.replicas))) 1 }}
affinity:
  podAntiAffinity:
    preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 100
        podAffinityTerm:
          topologyKey: kubernetes.io/hostname
          labelSelector:
            matchLabels:
              {{- include "gpupool.selectorLabels" . | nindent 14 }}
{{- end }}
{{- end -}}

{{/* Security ---------------------------------------------------------------------- */}}

{{- define "gpupool.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "gpupool.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
privileged: false
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Admission: which pods are GPU pods -------------------------------------------- */}}

{{/* The pod annotations by which a data plane hands out or steers GPUs (every
backend's gpu_annotations; tests/unit/test_cel_admission.py keeps them equal). KAI's
carry no domain. */}}
{{- define "gpupool.gpuAnnotations" -}}
['gpu-fraction', 'gpu-memory', 'gpu-fraction-num-devices', 'gpu-fraction-container-name', 'mps', 'nvidia.com/use-gputype', 'nvidia.com/nouse-gputype', 'huawei.com/vnpu-mode', 'cambricon.com/use-mlutype', 'cambricon.com/nouse-mlutype', 'hygon.com/use-dcutype', 'hygon.com/nouse-dcutype']
{{- end -}}

{{/* A resource or annotation key in a GPU vendor's domain (or gpupool's): wide on
purpose, so that every name any backend writes or a user asks for reaches the webhook,
which decides exactly. Standard CEL only (no Kubernetes extension library). */}}
{{- define "gpupool.celVendorKey" -}}
({{ . }}.startsWith('gpupool.io/') || {{ . }}.startsWith('nvidia.com/') || {{ . }}.startsWith('huawei.com/') || {{ . }}.startsWith('cambricon.com/') || {{ . }}.startsWith('hygon.com/'))
{{- end -}}

{{/* A resource name that asks for a GPU, exactly as the webhook reads it: the names a
user writes, a SKU's own resource, and every backend's own resource names. */}}
{{- define "gpupool.celGpuResource" -}}
({{ . }} in ['nvidia.com/gpu', 'nvidia.com/gpumem', 'nvidia.com/gpumem-percentage', 'nvidia.com/gpucores', 'nvidia.com/gpu.shared'] || {{ . }}.startsWith('gpupool.io/') || {{ . }}.startsWith('nvidia.com/mig-') || {{ . }}.startsWith('huawei.com/Ascend') || {{ . }}.startsWith('cambricon.com/') || {{ . }}.startsWith('hygon.com/'))
{{- end -}}

{{/* A list of containers with a resource (limits or requests) that matches a
predicate: (dict "list" "obj.spec.containers" "pred" "gpupool.celVendorKey") */}}
{{- define "gpupool.celContainersAsk" -}}
{{ .list }}.exists(c, has(c.resources) && ((has(c.resources.limits) && c.resources.limits.exists(r, {{ include .pred "r" }})) || (has(c.resources.requests) && c.resources.requests.exists(r, {{ include .pred "r" }}))))
{{- end -}}

{{/* Whether a pod (object or oldObject) should reach the webhook. */}}
{{- define "gpupool.celReachesWebhook" -}}
({{ include "gpupool.celContainersAsk" (dict "list" (printf "%s.spec.containers" .) "pred" "gpupool.celVendorKey") }} || (has({{ . }}.spec.initContainers) && {{ include "gpupool.celContainersAsk" (dict "list" (printf "%s.spec.initContainers" .) "pred" "gpupool.celVendorKey") }}) || (has({{ . }}.metadata.labels) && {{ . }}.metadata.labels.exists(k, k.startsWith('gpupool.io/'))) || (has({{ . }}.metadata.annotations) && {{ . }}.metadata.annotations.exists(k, {{ include "gpupool.celVendorKey" "k" }} || k in {{ include "gpupool.gpuAnnotations" . }})))
{{- end -}}
