//! The options that point an answering command (`arena answer`, `exec-eval`) at an
//! OpenAI-compatible server instead of a local model: one definition for both.

use crate::arena::judge_settings::JudgeSettings;
use clap::Args;

#[derive(Args, Debug, Clone)]
pub struct EndpointArgs {
    /// Answer through an OpenAI-compatible server instead (vLLM, `syncoder serve`, ...), e.g.
    /// http://127.0.0.1:8000/v1; it applies the model's chat template.
    #[arg(
        id = "endpoint",
        long = "endpoint",
        value_name = "ENDPOINT",
        requires = "endpoint_model"
    )]
    pub url: Option<String>,
    /// The model name the server serves (with --endpoint).
    #[arg(id = "endpoint_model", long = "endpoint-model", value_name = "ENDPOINT_MODEL")]
    pub model: Option<String>,
    /// Environment variable holding the server's API key (with --endpoint; unset: no key).
    #[arg(
        id = "endpoint_key_env",
        long = "endpoint-key-env",
        value_name = "ENDPOINT_KEY_ENV",
        default_value = "OPENAI_API_KEY"
    )]
    pub key_env: String,
}

impl EndpointArgs {
    /// The client settings for `--endpoint`, `concurrency` requests at once (`None` without it).
    pub fn settings(&self, concurrency: usize) -> Option<JudgeSettings> {
        let url = self.url.as_ref()?;
        let mut cfg = JudgeSettings::new(url.clone(), self.model.clone().unwrap_or_default());
        cfg.key_env = self.key_env.clone();
        cfg.concurrency = concurrency.max(1);
        Some(cfg)
    }
}
