
mod task_reference;
mod task_import;
mod task_suites;
