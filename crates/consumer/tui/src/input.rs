//! Keys to actions: a pure mapping, tested without a terminal.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// What a key asks for.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Leave.
    Quit,
    /// Show or hide the key list.
    Help,
    /// Move the selection.
    Up,
    /// Move the selection.
    Down,
    /// Move a page.
    PageUp,
    /// Move a page.
    PageDown,
    /// Open the selected process.
    Open,
    /// Close an overlay or the drill-down.
    Back,
    /// Sort by the next column.
    SortNext,
    /// Sort by the previous column.
    SortPrev,
    /// Reverse the sort.
    Reverse,
    /// Show one chip's processes, then the next, then all.
    ChipFilter,
    /// Start typing a name filter.
    StartFilter,
    /// A character of the name filter.
    FilterChar(char),
    /// Delete a character of the name filter.
    FilterBackspace,
    /// Keep the typed filter.
    FilterDone,
    /// Drop the typed filter.
    FilterCancel,
    /// Refresh more often.
    Faster,
    /// Refresh less often.
    Slower,
    /// Nothing.
    None,
}

/// Maps a key; `typing` is true while a name filter is being typed.
pub fn map_key(key: KeyEvent, typing: bool) -> Action {
    if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
        return Action::Quit;
    }
    if typing {
        return match key.code {
            KeyCode::Enter => Action::FilterDone,
            KeyCode::Esc => Action::FilterCancel,
            KeyCode::Backspace => Action::FilterBackspace,
            KeyCode::Char(c) => Action::FilterChar(c),
            _ => Action::None,
        };
    }
    match key.code {
        KeyCode::Char('q') => Action::Quit,
        KeyCode::Char('?') | KeyCode::Char('h') | KeyCode::F(1) => Action::Help,
        KeyCode::Up | KeyCode::Char('k') => Action::Up,
        KeyCode::Down | KeyCode::Char('j') => Action::Down,
        KeyCode::PageUp => Action::PageUp,
        KeyCode::PageDown => Action::PageDown,
        KeyCode::Enter => Action::Open,
        KeyCode::Esc | KeyCode::Backspace => Action::Back,
        KeyCode::Char('s') | KeyCode::Right => Action::SortNext,
        KeyCode::Char('S') | KeyCode::Left => Action::SortPrev,
        KeyCode::Char('r') => Action::Reverse,
        KeyCode::Char('c') => Action::ChipFilter,
        KeyCode::Char('/') => Action::StartFilter,
        KeyCode::Char('+') => Action::Faster,
        KeyCode::Char('-') => Action::Slower,
        _ => Action::None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    #[test]
    fn keys_map_to_actions() {
        assert_eq!(map_key(k(KeyCode::Char('q')), false), Action::Quit);
        assert_eq!(
            map_key(k(KeyCode::Char('q')), true),
            Action::FilterChar('q'),
            "typing a filter"
        );
        assert_eq!(
            map_key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL), true),
            Action::Quit
        );
        assert_eq!(map_key(k(KeyCode::Enter), false), Action::Open);
        assert_eq!(map_key(k(KeyCode::Enter), true), Action::FilterDone);
        assert_eq!(map_key(k(KeyCode::Char('?')), false), Action::Help);
        assert_eq!(map_key(k(KeyCode::Char('s')), false), Action::SortNext);
        assert_eq!(map_key(k(KeyCode::Esc), false), Action::Back);
        assert_eq!(map_key(k(KeyCode::Char('x')), false), Action::None);
    }
}
