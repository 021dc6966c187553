{{/*
Names. The name helpers read only .Release.Name so that the Airflow subchart can call
them too (named templates are shared between a chart and its subcharts): the
airflow.extraEnvFrom value uses them.
*/}}
{{- define "forgeline.prefix" -}}
{{- if contains "forgeline" .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-forgeline" .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "forgeline.envConfigMapName" -}}
{{- printf "%s-env" (include "forgeline.prefix" .) -}}
{{- end -}}

{{- define "forgeline.rayConnectionSecretName" -}}
{{- printf "%s-ray-connection" (include "forgeline.prefix" .) -}}
{{- end -}}

{{- define "forgeline.rayClusterName" -}}
{{- printf "%s-ray" (include "forgeline.prefix" .) -}}
{{- end -}}

{{- define "forgeline.rayJobsServiceName" -}}
{{- printf "%s-ray-jobs" (include "forgeline.prefix" .) -}}
{{- end -}}

{{/* The Secret Airflow reads its Ray connection from: the user's, or the chart's. */}}
{{- define "forgeline.connectionSecretInUse" -}}
{{- .Values.rayConnection.existingSecret | default (include "forgeline.rayConnectionSecretName" .) -}}
{{- end -}}

{{- define "forgeline.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- .Values.serviceAccount.name | default (include "forgeline.prefix" .) -}}
{{- else -}}
{{- .Values.serviceAccount.name | default "default" -}}
{{- end -}}
{{- end -}}

{{- define "forgeline.labels" -}}
app.kubernetes.io/name: forgeline
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "forgeline.image" -}}
{{- printf "%s:%s" .Values.image.repository .Values.image.tag -}}
{{- end -}}

{{/* FORGELINE_ARTIFACT_ROOT: a file:// URL on the shared claim, or the object-store URL. */}}
{{- define "forgeline.artifactRoot" -}}
{{- if eq .Values.artifacts.mode "pvc" -}}
{{- printf "file://%s" .Values.artifacts.pvc.mountPath -}}
{{- else -}}
{{- .Values.artifacts.objectStore.url -}}
{{- end -}}
{{- end -}}

{{/* http://host:port of the Ray Jobs API (dashboard) behind the job-submission Service. */}}
{{- define "forgeline.rayJobsHost" -}}
{{- printf "%s.%s.svc" (include "forgeline.rayJobsServiceName" .) .Release.Namespace -}}
{{- end -}}

{{/* Environment shared by the Ray head and the Ray workers. */}}
{{- define "forgeline.rayEnv" -}}
env:
  - name: RAY_TRAIN_V2_ENABLED
    value: "1"
  - name: RAY_USAGE_STATS_ENABLED
    value: "0"
  - name: XDG_CACHE_HOME
    value: /tmp/.cache
  {{- with .Values.ray.authToken.existingSecret }}
  - name: RAY_AUTH_MODE
    value: token
  - name: RAY_AUTH_TOKEN
    valueFrom:
      secretKeyRef:
        name: {{ . }}
        key: {{ $.Values.ray.authToken.key }}
  {{- end }}
envFrom:
  - configMapRef:
      name: {{ include "forgeline.envConfigMapName" . }}
  {{- with .Values.artifacts.objectStore.credentialsSecret }}
  {{- if eq $.Values.artifacts.mode "objectStore" }}
  - secretRef:
      name: {{ . }}
  {{- end }}
  {{- end }}
{{- end -}}

{{- define "forgeline.rayVolumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: dshm
  mountPath: /dev/shm
{{- if eq .Values.artifacts.mode "pvc" }}
- name: forgeline-artifacts
  mountPath: {{ .Values.artifacts.pvc.mountPath }}
{{- end }}
{{- end -}}

{{- define "forgeline.rayVolumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.ray.tmpSize }}
- name: dshm
  emptyDir:
    medium: Memory
    sizeLimit: {{ .Values.ray.sharedMemorySize }}
{{- if eq .Values.artifacts.mode "pvc" }}
- name: forgeline-artifacts
  persistentVolumeClaim:
    claimName: {{ .Values.artifacts.pvc.existingClaim }}
{{- end }}
{{- end -}}

{{/*
What the Airflow subchart will give its pods, resolved from the airflow.* values: the image,
the envFrom references (after the Airflow chart's own templating) and the artifact volume.
*/}}
{{- define "forgeline.airflowWiring" -}}
{{- $a := .Values.airflow -}}
{{- $envFrom := list -}}
{{- if $a.extraEnvFrom -}}
{{- $envFrom = tpl $a.extraEnvFrom . | fromYamlArray -}}
{{- end -}}
{{- $mount := dict -}}
{{- range ($a.volumeMounts | default list) -}}
{{- if eq .name "forgeline-artifacts" -}}{{- $mount = . -}}{{- end -}}
{{- end -}}
{{- $claim := "" -}}
{{- range ($a.volumes | default list) -}}
{{- if and (eq .name "forgeline-artifacts") .persistentVolumeClaim -}}
{{- $claim = .persistentVolumeClaim.claimName -}}
{{- end -}}
{{- end -}}
{{- $repo := $a.defaultAirflowRepository -}}
{{- $tag := $a.defaultAirflowTag -}}
{{- $digest := $a.defaultAirflowDigest -}}
{{- with ($a.images | default dict).airflow -}}
{{- $repo = .repository | default $repo -}}
{{- $tag = .tag | default $tag -}}
{{- $digest = .digest | default $digest -}}
{{- end -}}
{{- $image := printf "%s:%s" $repo $tag -}}
{{- if $digest }}{{ $image = printf "%s@%s" $repo $digest }}{{ end -}}
{{- dict "image" $image "envFrom" $envFrom "artifactClaim" $claim "artifactMountPath" ($mount.mountPath | default "") | toJson -}}
{{- end -}}

{{/*
Refuse to render when the values handed to the Airflow subchart disagree with the
forgeline values, listing every disagreement at once.
*/}}
{{- define "forgeline.checkWiring" -}}
{{- $errors := list -}}
{{- if .Values.install.airflow -}}
{{- $w := include "forgeline.airflowWiring" . | fromJson -}}
{{- if ne $w.image (include "forgeline.image" .) -}}
{{- $errors = append $errors (printf "airflow image %q differs from image %q: set airflow.defaultAirflowRepository/defaultAirflowTag to image.repository/tag" $w.image (include "forgeline.image" .)) -}}
{{- end -}}
{{- $refs := list -}}
{{- range $w.envFrom -}}
{{- with .configMapRef }}{{ $refs = append $refs (printf "configMap/%s" .name) }}{{ end -}}
{{- with .secretRef }}{{ $refs = append $refs (printf "secret/%s" .name) }}{{ end -}}
{{- end -}}
{{- $want := list (printf "configMap/%s" (include "forgeline.envConfigMapName" .)) (printf "secret/%s" (include "forgeline.connectionSecretInUse" .)) -}}
{{- if and (eq .Values.artifacts.mode "objectStore") .Values.artifacts.objectStore.credentialsSecret -}}
{{- $want = append $want (printf "secret/%s" .Values.artifacts.objectStore.credentialsSecret) -}}
{{- end -}}
{{- range $want -}}
{{- if not (has . $refs) -}}
{{- $errors = append $errors (printf "airflow.extraEnvFrom lacks %s (it has %v)" . $refs) -}}
{{- end -}}
{{- end -}}
{{- if eq .Values.artifacts.mode "pvc" -}}
{{- if ne $w.artifactClaim .Values.artifacts.pvc.existingClaim -}}
{{- $errors = append $errors (printf "airflow.volumes forgeline-artifacts claim %q differs from artifacts.pvc.existingClaim %q" $w.artifactClaim .Values.artifacts.pvc.existingClaim) -}}
{{- end -}}
{{- if ne $w.artifactMountPath .Values.artifacts.pvc.mountPath -}}
{{- $errors = append $errors (printf "airflow.volumeMounts forgeline-artifacts mountPath %q differs from artifacts.pvc.mountPath %q" $w.artifactMountPath .Values.artifacts.pvc.mountPath) -}}
{{- end -}}
{{- else if $w.artifactClaim -}}
{{- $errors = append $errors (printf "artifacts.mode is objectStore but airflow.volumes still mounts claim %q: set airflow.volumes and airflow.volumeMounts to []" $w.artifactClaim) -}}
{{- end -}}
{{- $gitSync := dig "dags" "gitSync" "enabled" false (.Values.airflow | toJson | fromJson) -}}
{{- if and (eq .Values.dags.source "gitSync") (not $gitSync) -}}
{{- $errors = append $errors "dags.source is gitSync but airflow.dags.gitSync.enabled is false" -}}
{{- else if and (eq .Values.dags.source "image") $gitSync -}}
{{- $errors = append $errors "airflow.dags.gitSync.enabled is true but dags.source is image: set dags.source to gitSync" -}}
{{- end -}}
{{- end -}}
{{- if gt (int .Values.ray.worker.gpus) 0 -}}
{{- if ne .Values.image.torch "cuda" -}}
{{- $errors = append $errors (printf "ray.worker.gpus is %v but image.torch is %q: build the image with a CUDA torch (TORCH_INDEX_URL, TORCH_SPEC) and set image.torch to cuda" .Values.ray.worker.gpus .Values.image.torch) -}}
{{- end -}}
{{- end -}}
{{- $wk := .Values.ray.worker -}}
{{- if gt (int $wk.minReplicas) (int $wk.maxReplicas) -}}
{{- $errors = append $errors (printf "ray.worker.minReplicas %v exceeds ray.worker.maxReplicas %v" $wk.minReplicas $wk.maxReplicas) -}}
{{- end -}}
{{- if or (lt (int $wk.replicas) (int $wk.minReplicas)) (gt (int $wk.replicas) (int $wk.maxReplicas)) -}}
{{- $errors = append $errors (printf "ray.worker.replicas %v is outside [minReplicas %v, maxReplicas %v]" $wk.replicas $wk.minReplicas $wk.maxReplicas) -}}
{{- end -}}
{{- if $errors -}}
{{- fail (printf "\nforgeline values disagree:\n  - %s" (join "\n  - " $errors)) -}}
{{- end -}}
{{- end -}}
