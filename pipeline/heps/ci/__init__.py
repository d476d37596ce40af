"""Continuous integration around the pipeline: Jenkins job XML (`jenkins_jobs`), the
Jenkins server (`jenkins_server`), the git post-receive hook (`hook`), and the
merge-request report (`review`)."""
