# Astro project image: `astro dev start` locally, `astro deploy` to Astro.
# Astro Runtime 3.3 carries Airflow 3.3; its ONBUILD steps copy this project into
# /usr/local/airflow, install packages.txt (apt) and requirements.txt (pip) — requirements.txt
# holds the package's own pins and no Airflow pin, so the runtime's Airflow is kept.
FROM astrocrpublic.azurecr.io/runtime:3.3-2

# The package under include/ installed (not only put on PYTHONPATH) so that its Airflow
# provider entry point registers the `opco` connection type, hooks, sensor and trigger for the
# API server, the scheduler, the workers and the triggerer alike.
RUN pip install --no-cache-dir --no-deps /usr/local/airflow

# Reports, staged documents and proof exports: a folder of the image by default; in a
# deployment with several workers point `cfa_opco_reports_dir` at shared storage.
ENV CFA_PROJECT_DIR=/usr/local/airflow
