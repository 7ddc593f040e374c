//! Conversations, and the chat templates of the local models.
//!
//! The templates are hardcoded per architecture rather than interpreted from the GGUF's
//! Jinja `tokenizer.chat_template`: both known models use a fixed layout.

use serde::{Deserialize, Serialize};

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
}

impl ChatMessage {
    pub fn user(content: impl Into<String>) -> Self {
        Self {
            role: Role::User,
            content: content.into(),
        }
    }
}

/// How a local model wants a conversation written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatTemplate {
    /// Gemma 3: `<start_of_turn>user\n...<end_of_turn>\n<start_of_turn>model\n`; a system
    /// message is put before the first user message, as Gemma's own template does.
    Gemma,
    /// ChatML (SmolLM2, Qwen): `<|im_start|>user\n...<|im_end|>\n<|im_start|>assistant\n`.
    ChatMl,
}

impl ChatTemplate {
    /// The prompt text for `messages`, ending where the assistant's answer begins (BOS is
    /// added by the tokenizer, not here).
    pub fn render(self, messages: &[ChatMessage]) -> String {
        let mut out = String::new();
        match self {
            ChatTemplate::Gemma => {
                let mut system: Option<&str> = None;
                for m in messages {
                    let role = match m.role {
                        Role::System => {
                            system = Some(&m.content);
                            continue;
                        }
                        Role::User => "user",
                        Role::Assistant => "model",
                    };
                    out.push_str("<start_of_turn>");
                    out.push_str(role);
                    out.push('\n');
                    if let Some(sys) = system.take() {
                        out.push_str(sys);
                        out.push_str("\n\n");
                    }
                    out.push_str(m.content.trim());
                    out.push_str("<end_of_turn>\n");
                }
                out.push_str("<start_of_turn>model\n");
            }
            ChatTemplate::ChatMl => {
                for m in messages {
                    let role = match m.role {
                        Role::System => "system",
                        Role::User => "user",
                        Role::Assistant => "assistant",
                    };
                    out.push_str("<|im_start|>");
                    out.push_str(role);
                    out.push('\n');
                    out.push_str(&m.content);
                    out.push_str("<|im_end|>\n");
                }
                out.push_str("<|im_start|>assistant\n");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemma_template_matches_the_reference_layout() {
        let msgs = [
            ChatMessage {
                role: Role::System,
                content: "Be brief.".into(),
            },
            ChatMessage::user("Hi"),
        ];
        assert_eq!(
            ChatTemplate::Gemma.render(&msgs),
            "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n"
        );
    }

    #[test]
    fn chatml_template_matches_the_reference_layout() {
        assert_eq!(
            ChatTemplate::ChatMl.render(&[ChatMessage::user("Hi")]),
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }
}
