//! Builders for the (large, layer-230) TL objects the model answers with. Every optional field is
//! left out: the objects are minimal but valid.

use grammers_tl_types::{enums, types};

use super::{Account, ChatStatus, SecretChat};

/// `user#b1b8cc83` for `acc`, as seen by someone (`is_self` when it is the caller).
pub(crate) fn user(acc: &Account, is_self: bool) -> enums::User {
    enums::User::User(types::User {
        is_self,
        contact: false,
        mutual_contact: false,
        deleted: false,
        bot: false,
        bot_chat_history: false,
        bot_nochats: false,
        verified: false,
        restricted: false,
        min: false,
        bot_inline_geo: false,
        support: false,
        scam: false,
        apply_min_photo: false,
        fake: false,
        bot_attach_menu: false,
        premium: false,
        attach_menu_enabled: false,
        bot_can_edit: false,
        close_friend: false,
        stories_hidden: false,
        stories_unavailable: false,
        contact_require_premium: false,
        bot_business: false,
        bot_has_main_app: false,
        bot_forum_view: false,
        bot_forum_can_manage_topics: false,
        bot_can_manage_bots: false,
        bot_guestchat: false,
        bot_guard: false,
        id: acc.user_id,
        access_hash: Some(acc.access_hash),
        first_name: Some(acc.first_name.clone()),
        last_name: None,
        username: None,
        phone: Some(acc.phone.clone()),
        photo: None,
        status: None,
        bot_info_version: None,
        restriction_reason: None,
        bot_inline_placeholder: None,
        lang_code: None,
        emoji_status: None,
        usernames: None,
        stories_max_id: None,
        color: None,
        profile_color: None,
        bot_active_users: None,
        bot_verification_icon: None,
        send_paid_messages_stars: None,
        linked_community_id: None,
    })
}

/// `userFull#6cbe645` with empty settings.
pub(crate) fn user_full(id: i64, blocked: bool) -> enums::UserFull {
    enums::UserFull::Full(types::UserFull {
        blocked,
        phone_calls_available: false,
        phone_calls_private: false,
        can_pin_message: false,
        has_scheduled: false,
        video_calls_available: false,
        voice_messages_forbidden: false,
        translations_disabled: false,
        stories_pinned_available: false,
        blocked_my_stories_from: false,
        wallpaper_overridden: false,
        contact_require_premium: false,
        read_dates_private: false,
        sponsored_enabled: false,
        can_view_revenue: false,
        bot_can_manage_emoji_status: false,
        display_gifts_button: false,
        noforwards_my_enabled: false,
        noforwards_peer_enabled: false,
        unofficial_security_risk: false,
        id,
        about: None,
        settings: peer_settings(),
        personal_photo: None,
        profile_photo: None,
        fallback_photo: None,
        notify_settings: notify_settings(),
        bot_info: None,
        pinned_msg_id: None,
        common_chats_count: 0,
        folder_id: None,
        ttl_period: None,
        theme: None,
        private_forward_name: None,
        bot_group_admin_rights: None,
        bot_broadcast_admin_rights: None,
        wallpaper: None,
        stories: None,
        business_work_hours: None,
        business_location: None,
        business_greeting_message: None,
        business_away_message: None,
        business_intro: None,
        birthday: None,
        personal_channel_id: None,
        personal_channel_message: None,
        stargifts_count: None,
        starref_program: None,
        bot_verification: None,
        send_paid_messages_stars: None,
        disallowed_gifts: None,
        stars_rating: None,
        stars_my_pending_rating: None,
        stars_my_pending_rating_date: None,
        main_tab: None,
        saved_music: None,
        note: None,
        bot_manager_id: None,
    })
}

fn peer_settings() -> enums::PeerSettings {
    enums::PeerSettings::Settings(types::PeerSettings {
        report_spam: false,
        add_contact: false,
        block_contact: false,
        share_contact: false,
        need_contacts_exception: false,
        report_geo: false,
        autoarchived: false,
        invite_members: false,
        request_chat_broadcast: false,
        business_bot_paused: false,
        business_bot_can_reply: false,
        geo_distance: None,
        request_chat_title: None,
        request_chat_date: None,
        business_bot_id: None,
        business_bot_manage_url: None,
        charge_paid_message_stars: None,
        registration_month: None,
        phone_country: None,
        name_change_date: None,
        photo_change_date: None,
    })
}

fn notify_settings() -> enums::PeerNotifySettings {
    enums::PeerNotifySettings::Settings(types::PeerNotifySettings {
        show_previews: None,
        silent: None,
        mute_until: None,
        ios_sound: None,
        android_sound: None,
        other_sound: None,
        stories_muted: None,
        stories_hide_sender: None,
        stories_ios_sound: None,
        stories_android_sound: None,
        stories_other_sound: None,
    })
}

/// The `EncryptedChat` a user sees for `chat` right now.
///
/// - waiting: the creator sees `encryptedChatWaiting`, the participant `encryptedChatRequested`;
/// - accepted: `encryptedChat` with `g_a_or_b` = g_b for the creator and g_a for the participant;
/// - discarded: `encryptedChatDiscarded`.
pub(crate) fn encrypted_chat(chat: &SecretChat, viewer: i64) -> enums::EncryptedChat {
    let creator = viewer == chat.admin_id;
    match &chat.status {
        ChatStatus::Waiting if creator => {
            enums::EncryptedChat::Waiting(types::EncryptedChatWaiting {
                id: chat.id,
                access_hash: chat.access_hash,
                date: chat.date,
                admin_id: chat.admin_id,
                participant_id: chat.participant_id,
            })
        }
        ChatStatus::Waiting => enums::EncryptedChat::Requested(types::EncryptedChatRequested {
            folder_id: None,
            id: chat.id,
            access_hash: chat.access_hash,
            date: chat.date,
            admin_id: chat.admin_id,
            participant_id: chat.participant_id,
            g_a: chat.g_a.clone(),
        }),
        ChatStatus::Accepted => enums::EncryptedChat::Chat(types::EncryptedChat {
            id: chat.id,
            access_hash: chat.access_hash,
            date: chat.date,
            admin_id: chat.admin_id,
            participant_id: chat.participant_id,
            g_a_or_b: if creator {
                chat.g_b.clone()
            } else {
                chat.g_a.clone()
            },
            key_fingerprint: chat.key_fingerprint,
        }),
        ChatStatus::Discarded { history_deleted } => {
            enums::EncryptedChat::Discarded(types::EncryptedChatDiscarded {
                history_deleted: *history_deleted,
                id: chat.id,
            })
        }
    }
}
